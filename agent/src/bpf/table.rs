//! Aligned plain-text tables for `inspect` output, and small value formatters.
use std::net::Ipv4Addr;

use skiff_common::{PROTO_TCP, PROTO_UDP};

/// A table with a header row; columns are padded to their widest cell.
#[derive(Clone, Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Renders the table; the last column is not padded (no trailing spaces).
    pub fn render(&self) -> String {
        let cols = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.header.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; cols];
        for r in self.rows.iter().chain([&self.header]) {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in [&self.header].into_iter().chain(self.rows.iter()) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                if i + 1 == r.len() {
                    line.push_str(c);
                } else {
                    line.push_str(&format!("{c:<w$}  ", w = widths[i]));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

pub fn proto_name(p: u8) -> String {
    match p {
        PROTO_TCP => "tcp".into(),
        PROTO_UDP => "udp".into(),
        132 => "sctp".into(),
        other => format!("proto{other}"),
    }
}

/// An address and port stored in network byte order, as `a.b.c.d:port`.
pub fn addr_port(addr_be: u32, port_be: u16) -> String {
    format!(
        "{}:{}",
        Ipv4Addr::from(u32::from_be(addr_be)),
        u16::from_be(port_be)
    )
}

/// A duration in nanoseconds as a short human value (`350ms`, `12s`, `5m3s`, `2h10m`).
pub fn human_ns(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    if s == 0 {
        format!("{}ms", ns / 1_000_000)
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{}h{}m", s / 3600, (s % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_have_no_trailing_space() {
        let mut t = Table::new(&["FRONTEND", "SCOPE", "NAME"]);
        t.row(vec![
            "10.96.0.1:443/tcp".into(),
            "internal".into(),
            "default/kubernetes:https".into(),
        ]);
        t.row(vec!["1.2.3.4:80/tcp".into(), "ext".into(), "".into()]);
        let out = t.render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "FRONTEND           SCOPE     NAME");
        assert_eq!(lines[1], "10.96.0.1:443/tcp  internal  default/kubernetes:https");
        assert_eq!(lines[2], "1.2.3.4:80/tcp     ext");
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn formats() {
        assert_eq!(proto_name(6), "tcp");
        assert_eq!(proto_name(17), "udp");
        assert_eq!(proto_name(1), "proto1");
        assert_eq!(
            addr_port(u32::from(Ipv4Addr::new(10, 0, 0, 1)).to_be(), 8080u16.to_be()),
            "10.0.0.1:8080"
        );
        assert_eq!(human_ns(350_000_000), "350ms");
        assert_eq!(human_ns(12_000_000_000), "12s");
        assert_eq!(human_ns(303_000_000_000), "5m3s");
        assert_eq!(human_ns(7_800_000_000_000), "2h10m");
    }
}
