//! Container logs: CRI-format lines (`<RFC3339 time> <stream> F <line>`) in files rotated by size, and reading
//! them back as plain text.
use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

/// A log file that rotates to `<path>.1 .. <path>.<keep>` when it would grow past `max_bytes`.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: File,
    size: u64,
}

fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl RotatingLog {
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1),
            keep,
            file,
            size,
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.keep == 0 {
            self.file.set_len(0)?;
        } else {
            let _ = std::fs::remove_file(rotated(&self.path, self.keep));
            for n in (1..self.keep).rev() {
                let from = rotated(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
            self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }

    /// Appends one line from `stream` ("stdout" or "stderr") with the current time.
    pub fn line(&mut self, stream: &str, line: &str) -> io::Result<()> {
        let entry = format_line(&k8s_openapi::jiff::Timestamp::now().to_string(), stream, line);
        if self.size > 0 && self.size + entry.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(entry.as_bytes())?;
        self.size += entry.len() as u64;
        Ok(())
    }
}

/// One CRI log line.
pub fn format_line(time: &str, stream: &str, line: &str) -> String {
    format!("{time} {stream} F {}\n", line.trim_end_matches(['\n', '\r']))
}

/// The message part of a CRI log line (the line itself when it is not one).
pub fn message(line: &str) -> &str {
    let mut parts = line.splitn(4, ' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some("stdout" | "stderr"), Some(_), Some(msg)) => msg,
        _ => line,
    }
}

/// The log of one container run as plain text, oldest rotated file first; the last `tail` lines when given.
pub fn read(path: &Path, tail: Option<usize>) -> io::Result<String> {
    let mut files: Vec<PathBuf> = (1..100)
        .map(|n| rotated(path, n))
        .filter(|p| p.exists())
        .collect();
    files.reverse();
    files.push(path.to_path_buf());
    let mut lines = Vec::new();
    for f in files {
        match std::fs::read_to_string(&f) {
            Ok(text) => lines.extend(text.lines().map(|l| message(l).to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let skip = tail.map_or(0, |t| lines.len().saturating_sub(t));
    Ok(lines[skip..].iter().map(|l| format!("{l}\n")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_lines_round_trip() {
        let l = format_line("2026-01-01T00:00:00Z", "stderr", "a b c\n");
        assert_eq!(l, "2026-01-01T00:00:00Z stderr F a b c\n");
        assert_eq!(message(l.trim_end()), "a b c");
        assert_eq!(message("not cri"), "not cri");
    }

    #[test]
    fn rotates_by_size_and_keeps_the_newest() {
        let dir = std::env::temp_dir().join(format!("skiff-logs-test-{}", std::process::id()));
        let path = dir.join("0.log");
        let mut log = RotatingLog::open(&path, 200, 2).unwrap();
        for i in 0..20 {
            log.line("stdout", &format!("line {i:02}")).unwrap();
        }
        assert!(std::fs::metadata(&path).unwrap().len() <= 200);
        assert!(rotated(&path, 2).exists());
        assert!(!rotated(&path, 3).exists());
        let text = read(&path, None).unwrap();
        assert!(text.ends_with("line 19\n"), "{text}");
        assert!(
            !text.contains("line 00"),
            "oldest lines were rotated away: {text}"
        );
        assert_eq!(read(&path, Some(2)).unwrap(), "line 18\nline 19\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
