//! Background reconcilers that act on stored objects.

pub mod namespace;
