//! Plain-text tables for the admin CLI.

/// Left-aligned columns separated by two spaces; the header is upper-case.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// Unix milliseconds as RFC 3339 UTC, to the second (the core's one formatter of record
/// times).
pub fn time(millis: i64) -> String {
    gatehouse_core::format_time(millis.max(0), gatehouse_core::TimeStyle::Rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let t = render(
            &["id", "operator"],
            &[
                vec!["1".into(), "alice".into()],
                vec!["22".into(), "b".into()],
            ],
        );
        assert_eq!(t, "ID  OPERATOR\n1   alice\n22  b\n");
        assert_eq!(time(0), "1970-01-01T00:00:00Z");
    }
}
