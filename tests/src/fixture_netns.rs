//! A private, anonymous network namespace for one fixture closure (routes and neighbours for `bpf_fib_lookup`),
//! gone when the closure's thread ends, so nothing is left behind even when a test fails.
use std::{process::Command, thread};

/// Runs `f` on a fresh thread inside a new network namespace. Commands spawned from `f` run in it too.
pub fn in_private_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare only affects the calling thread's namespaces.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "unshare(CLONE_NEWNET) failed: {} (run as root)",
                std::io::Error::last_os_error()
            );
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Runs a shell command line in the current thread's namespace; panics with its stderr on failure.
pub fn sh(cmdline: &str) {
    let out = Command::new("sh").args(["-c", cmdline]).output().expect("run sh");
    assert!(
        out.status.success(),
        "`{cmdline}` failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Reads the MAC address of an interface in the current namespace (via `ip`: /sys shows the namespace that mounted it).
pub fn mac_of(ifname: &str) -> [u8; 6] {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "dev", ifname])
        .output()
        .expect("run ip");
    let text = String::from_utf8_lossy(&out.stdout);
    let mac = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC for {ifname} in: {text}"));
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("mac byte"))
        .collect();
    bytes.try_into().expect("6-byte mac")
}
