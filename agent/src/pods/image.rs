//! What kind of program an image name stands for: the built-in agnhost, the pause container, or a host command.

/// How a container image is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// `agnhost` (any registry, any tag): the built-in agnhost.
    Agnhost,
    /// `pause` (any registry, any tag): sleeps until stopped.
    Pause,
    /// Anything else: the container's command runs from the host filesystem.
    Host,
}

/// The repository's last path component, without tag or digest: `registry.k8s.io/e2e-test-images/agnhost:2.53`
/// -> `agnhost`.
pub fn short_name(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    last.split(':').next().unwrap_or(last)
}

/// Classifies an image reference.
pub fn classify(image: &str) -> ImageKind {
    match short_name(image.trim()) {
        "agnhost" => ImageKind::Agnhost,
        "pause" => ImageKind::Pause,
        _ => ImageKind::Host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_repository_name() {
        assert_eq!(
            classify("registry.k8s.io/e2e-test-images/agnhost:2.53"),
            ImageKind::Agnhost
        );
        assert_eq!(classify("agnhost"), ImageKind::Agnhost);
        assert_eq!(classify("localhost:5000/agnhost@sha256:abc"), ImageKind::Agnhost);
        assert_eq!(classify("registry.k8s.io/pause:3.10"), ImageKind::Pause);
        assert_eq!(classify("busybox:1.36"), ImageKind::Host);
        assert_eq!(classify("localhost:5000/my-agnhost:1"), ImageKind::Host);
    }
}
