//! Owner-only directories: the store, keys and tokens live below the data dir, so it is 0700 (as etcd keeps its
//! data dir), whoever's umask started the server.
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Creates `path` (and missing parents) as 0700 and tightens it to 0700 if it already exists.
pub fn ensure(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// Makes an existing file readable and writable by its owner only.
pub fn restrict_file(path: &Path) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_and_tightens_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let nested = tmp.path().join("a/b");
        ensure(&nested).unwrap();
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        assert_eq!(mode(&nested), 0o700);
        std::fs::set_permissions(&nested, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure(&nested).unwrap();
        assert_eq!(mode(&nested), 0o700);
        let file = nested.join("f");
        std::fs::write(&file, "x").unwrap();
        restrict_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
    }
}
