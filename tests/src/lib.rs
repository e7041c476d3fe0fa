//! Shared helpers for Skiff's end-to-end suites.
