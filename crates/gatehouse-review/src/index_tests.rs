#![allow(clippy::unwrap_used)]
use super::*;

fn cast(events: &[(f64, &str, &str)]) -> Cast {
    let mut text = String::from(r#"{"version": 2, "width": 80, "height": 24}"#);
    for (t, c, d) in events {
        text.push('\n');
        text.push_str(&serde_json::json!([t, c, d]).to_string());
    }
    text.push('\n');
    Cast::parse(text.as_bytes()).unwrap()
}

#[test]
fn output_input_and_markers_become_timed_lines() {
    let c = cast(&[
        (1.0, "i", "ech"),
        (1.2, "i", "x\u{7f}o hi\r"),
        (1.3, "o", "\u{1b}[1;31mhel"),
        (
            1.5,
            "o",
            "lo\u{1b}[0m world\r\n\u{1b}[5;1Hfoo\u{1b}[6;1Hbar",
        ),
        (4.0, "m", "warning: idle timeout in 10s"),
    ]);
    let doc = Document::of_cast(&c);
    let (hits, _) = doc.find("hello world", 10);
    assert_eq!(
        hits,
        vec![(
            Duration::from_millis(1300),
            HitKind::Output,
            "hello world".into()
        )]
    );
    let (hits, _) = doc.find("echo hi", 10);
    assert_eq!(hits[0].0, Duration::from_millis(1000));
    assert_eq!(hits[0].1, HitKind::Input);
    assert_eq!(
        doc.find("foo bar", 10).0.len(),
        1,
        "cursor moves separate words"
    );
    let (hits, _) = doc.find("idle timeout", 10);
    assert_eq!(hits[0].0, Duration::from_secs(4));
    assert_eq!(hits[0].1, HitKind::Marker);
    assert_eq!(
        doc.find("HELLO", 10).0.len(),
        0,
        "needle is lowered by the caller"
    );
}

#[test]
fn cache_round_trips_and_is_keyed_by_stamp() {
    let c = cast(&[(1.0, "o", "one\r\ntwo\r\n"), (2.0, "m", "mark")]);
    let doc = Document::of_cast(&c);
    let text = doc.to_cache("10-20");
    let back = Document::from_cache(&text, "10-20").unwrap();
    assert_eq!(back.text, doc.text);
    assert_eq!(back.lines.len(), doc.lines.len());
    assert!(Document::from_cache(&text, "10-21").is_none());
}

#[test]
fn the_cache_is_as_private_as_the_recording() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let tmp = tempfile::tempdir().unwrap();
    let rec = tmp.path().join("s1.cast");
    std::fs::write(&rec, "{\"version\": 2, \"width\": 80, \"height\": 24}\n").unwrap();
    let dir = tmp.path().join(".index");
    SearchIndex::new(Some(dir.clone()))
        .document("s1", &rec)
        .unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&index_file(&dir, "s1")), 0o600);

    // a temp file left behind by a crash, readable by all, is not reused as it is
    std::fs::remove_file(index_file(&dir, "s1")).unwrap();
    let stale = index_file(&dir, "s1").with_extension("idx.tmp");
    std::fs::write(&stale, "old").unwrap();
    std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();
    SearchIndex::new(Some(dir.clone()))
        .document("s1", &rec)
        .unwrap();
    assert_eq!(mode(&index_file(&dir, "s1")), 0o600);
}
