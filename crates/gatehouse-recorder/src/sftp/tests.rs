//! Tests of the SFTP tap. Packets are built byte for byte as draft-ietf-secsh-filexfer-02
//! and OpenSSH's `PROTOCOL` (§4) lay them out: `uint32 length, byte type, uint32 id, …`.

use super::wire::{ATTR_ACMODTIME, ATTR_EXTENDED, ATTR_PERMISSIONS, ATTR_SIZE, ATTR_UIDGID};
use super::*;

fn packet(kind: u8, fields: &[&[u8]]) -> Vec<u8> {
    let mut body = vec![kind];
    for f in fields {
        body.extend_from_slice(f);
    }
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}
fn u32b(v: u32) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}
fn u64b(v: u64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}
fn s(v: &[u8]) -> Vec<u8> {
    let mut out = u32b(v.len() as u32);
    out.extend_from_slice(v);
    out
}
/// SSH_FXP_EXTENDED: `uint32 id, string request-name, …`.
fn extended(id: u32, name: &str, fields: &[&[u8]]) -> Vec<u8> {
    let mut all: Vec<&[u8]> = vec![];
    let (idb, nameb) = (u32b(id), s(name.as_bytes()));
    all.push(&idb);
    all.push(&nameb);
    all.extend_from_slice(fields);
    packet(FXP_EXTENDED, &all)
}
fn lines(log: Vec<Transfer>) -> Vec<String> {
    log.iter().map(ToString::to_string).collect()
}
/// A tap with `path` open as handle `h`.
fn tap_with_open(id: u32, path: &str, h: &[u8]) -> SftpTap {
    let mut tap = SftpTap::default();
    let open = packet(
        FXP_OPEN,
        &[&u32b(id), &s(path.as_bytes()), &u32b(0x1a), &u32b(0)],
    );
    assert!(tap.operator_bytes(&open).is_empty());
    tap.target_bytes(&packet(FXP_HANDLE, &[&u32b(id), &s(h)]));
    tap
}

#[test]
fn upload_then_download_split_at_every_byte() {
    let mut op = Vec::new();
    let mut tg = Vec::new();
    // upload: open(1) -> handle h1, two writes, close
    op.extend(packet(
        FXP_OPEN,
        &[&u32b(1), &s(b"/tmp/up.bin"), &u32b(0x1a), &u32b(0)],
    ));
    tg.extend(packet(FXP_HANDLE, &[&u32b(1), &s(b"h1")]));
    op.extend(packet(
        FXP_WRITE,
        &[&u32b(2), &s(b"h1"), &u64b(0), &s(&[7; 1000])],
    ));
    op.extend(packet(
        FXP_WRITE,
        &[&u32b(3), &s(b"h1"), &u64b(1000), &s(&[7; 24])],
    ));
    op.extend(packet(FXP_CLOSE, &[&u32b(4), &s(b"h1")]));
    let mut tap = SftpTap::default();
    let mut log = Vec::new();
    // the handle reply arrives before the writes are parsed
    log.extend(tap.operator_bytes(&op[..op.len() / 3]));
    for b in &tg {
        log.extend(tap.target_bytes(std::slice::from_ref(b)));
    }
    for b in &op[op.len() / 3..] {
        log.extend(tap.operator_bytes(std::slice::from_ref(b)));
    }
    assert_eq!(lines(log), ["sftp upload /tmp/up.bin (1024 bytes)"]);

    // download: open, read -> data, read -> status EOF, close
    let mut log = Vec::new();
    log.extend(tap.operator_bytes(&packet(
        FXP_OPEN,
        &[&u32b(5), &s(b"/etc/hosts"), &u32b(1), &u32b(0)],
    )));
    tap.target_bytes(&packet(FXP_HANDLE, &[&u32b(5), &s(b"h2")]));
    tap.operator_bytes(&packet(
        FXP_READ,
        &[&u32b(6), &s(b"h2"), &u64b(0), &u32b(32768)],
    ));
    tap.target_bytes(&packet(FXP_DATA, &[&u32b(6), &s(&[1; 300])]));
    tap.operator_bytes(&packet(
        FXP_READ,
        &[&u32b(7), &s(b"h2"), &u64b(300), &u32b(32768)],
    ));
    tap.target_bytes(&packet(101, &[&u32b(7), &u32b(1), &s(b"EOF"), &s(b"")]));
    log.extend(tap.operator_bytes(&packet(FXP_CLOSE, &[&u32b(8), &s(b"h2")])));
    assert_eq!(lines(log), ["sftp download /etc/hosts (300 bytes)"]);
    assert!(tap.pending_read.is_empty());
}

#[test]
fn remove_rename_mkdir_rmdir() {
    let mut tap = SftpTap::default();
    let log = tap.operator_bytes(
        &[
            packet(FXP_REMOVE, &[&u32b(1), &s(b"/a")]),
            packet(FXP_RENAME, &[&u32b(2), &s(b"/b"), &s(b"/c")]),
            packet(FXP_MKDIR, &[&u32b(3), &s(b"/d"), &u32b(0)]),
            packet(FXP_RMDIR, &[&u32b(4), &s(b"/e")]),
        ]
        .concat(),
    );
    assert_eq!(
        lines(log),
        [
            "sftp remove /a",
            "sftp rename /b -> /c",
            "sftp mkdir /d",
            "sftp rmdir /e"
        ]
    );
}

#[test]
fn posix_rename_as_stock_sftp_sends_it() {
    // PROTOCOL §4.3: string "posix-rename@openssh.com", string oldpath, string newpath
    let mut tap = SftpTap::default();
    let log = tap.operator_bytes(&extended(
        9,
        "posix-rename@openssh.com",
        &[&s(b"/home/bob/a.txt"), &s(b"/home/bob/b.txt")],
    ));
    assert_eq!(
        lines(log),
        ["sftp posix-rename /home/bob/a.txt -> /home/bob/b.txt"]
    );
}

#[test]
fn setstat_shows_which_attributes_change() {
    let mut tap = SftpTap::default();
    // chmod 644: flags PERMISSIONS, uint32 permissions (sftp sends the type bits too)
    let chmod = packet(
        FXP_SETSTAT,
        &[
            &u32b(1),
            &s(b"/f"),
            &u32b(ATTR_PERMISSIONS),
            &u32b(0o100644),
        ],
    );
    // chown 1000: flags UIDGID, uint32 uid, uint32 gid
    let chown = packet(
        FXP_SETSTAT,
        &[
            &u32b(2),
            &s(b"/f"),
            &u32b(ATTR_UIDGID),
            &u32b(1000),
            &u32b(50),
        ],
    );
    // everything at once, in the draft's field order, with one extended pair
    let all = packet(
        FXP_SETSTAT,
        &[
            &u32b(3),
            &s(b"/g"),
            &u32b(ATTR_SIZE | ATTR_UIDGID | ATTR_PERMISSIONS | ATTR_ACMODTIME | ATTR_EXTENDED),
            &u64b(0),
            &u32b(0),
            &u32b(0),
            &u32b(0o4755),
            &u32b(1_700_000_000),
            &u32b(1_700_000_001),
            &u32b(1),
            &s(b"user.note"),
            &s(b"x"),
        ],
    );
    let log = tap.operator_bytes(&[chmod, chown, all].concat());
    assert_eq!(
        lines(log),
        [
            "sftp setstat /f (mode 0644)",
            "sftp setstat /f (uid 1000 gid 50)",
            "sftp setstat /g (mode 4755, uid 0 gid 0, size 0, atime 1700000000 mtime 1700000001, extended user.note)",
        ]
    );
    // cut-short attributes are not logged and do not panic
    let cut = packet(
        FXP_SETSTAT,
        &[&u32b(4), &s(b"/f"), &u32b(ATTR_UIDGID), &u32b(1)],
    );
    assert!(tap.operator_bytes(&cut).is_empty());
}

#[test]
fn fsetstat_and_lsetstat_name_the_file() {
    let mut tap = tap_with_open(1, "/var/log/app.log", b"\0\0\0\x07");
    // truncate an open file: FSETSTAT, string handle, ATTRS with SIZE
    let trunc = packet(
        FXP_FSETSTAT,
        &[&u32b(2), &s(b"\0\0\0\x07"), &u32b(ATTR_SIZE), &u64b(0)],
    );
    let unknown = packet(
        FXP_FSETSTAT,
        &[
            &u32b(3),
            &s(b"\x01\xff"),
            &u32b(ATTR_PERMISSIONS),
            &u32b(0o600),
        ],
    );
    // PROTOCOL §4.10: string "lsetstat@openssh.com", string path, ATTRS attrs
    let lset = extended(
        4,
        "lsetstat@openssh.com",
        &[&s(b"/l"), &u32b(ATTR_PERMISSIONS), &u32b(0o777)],
    );
    assert_eq!(
        lines(tap.operator_bytes(&[trunc, unknown, lset].concat())),
        [
            "sftp fsetstat /var/log/app.log (size 0)",
            "sftp fsetstat handle 0x01ff (mode 0600)",
            "sftp lsetstat /l (mode 0777)",
        ]
    );
}

#[test]
fn symlink_in_openssh_order_and_hardlink() {
    let mut tap = SftpTap::default();
    // `ln -s /etc/passwd /tmp/pw` in sftp: SYMLINK with targetpath first (PROTOCOL §4.1)
    let sym = packet(FXP_SYMLINK, &[&u32b(1), &s(b"/etc/passwd"), &s(b"/tmp/pw")]);
    // PROTOCOL §4.7: string "hardlink@openssh.com", string oldpath, string newpath
    let hard = extended(2, "hardlink@openssh.com", &[&s(b"/srv/a"), &s(b"/srv/b")]);
    assert_eq!(
        lines(tap.operator_bytes(&[sym, hard].concat())),
        [
            "sftp symlink /tmp/pw -> /etc/passwd",
            "sftp hardlink /srv/b to /srv/a"
        ]
    );
}

#[test]
fn copy_data_between_open_files() {
    let mut tap = tap_with_open(1, "/src", b"hs");
    tap.operator_bytes(&packet(
        FXP_OPEN,
        &[&u32b(2), &s(b"/dst"), &u32b(0x1a), &u32b(0)],
    ));
    tap.target_bytes(&packet(FXP_HANDLE, &[&u32b(2), &s(b"hd")]));
    // draft-ietf-secsh-filexfer-extensions-00 §7: string read-from-handle, uint64
    // read-from-offset, uint64 read-data-length, string write-to-handle, uint64
    // write-to-offset
    let copy = extended(
        3,
        "copy-data",
        &[&s(b"hs"), &u64b(0), &u64b(0), &s(b"hd"), &u64b(4096)],
    );
    assert_eq!(
        lines(tap.operator_bytes(&copy)),
        ["sftp copy-data /src at 0 -> /dst at 4096 (to the end)"]
    );
}

#[test]
fn unknown_extensions_are_named_and_read_only_ones_are_not() {
    let mut tap = SftpTap::default();
    let fsync = extended(1, "fsync@openssh.com", &[&s(b"h")]);
    let statvfs = extended(2, "statvfs@openssh.com", &[&s(b"/")]);
    let odd = extended(3, "make-it-so@example.com", &[&s(b"/x")]);
    assert_eq!(
        lines(tap.operator_bytes(&[fsync, statvfs, odd].concat())),
        ["sftp extended request make-it-so@example.com (not interpreted)"]
    );
}

#[test]
fn an_operation_followed_by_garbage_in_the_same_write_is_still_logged() {
    // regression (what the sftp_tap fuzz target's split check catches): the framer dropped
    // the packets it had completed when a later length in the same chunk was bad
    let mut tap = SftpTap::default();
    let mut bytes = packet(FXP_REMOVE, &[&u32b(1), &s(b"/etc/shadow")]);
    bytes.extend([0xff; 8]);
    let log = tap.operator_bytes(&bytes);
    assert_eq!(log[0].to_string(), "sftp remove /etc/shadow");
    assert!(matches!(&log[1..], [Transfer::Unparseable(_)]));
    // after giving up, nothing more is parsed
    assert!(
        tap.operator_bytes(&packet(FXP_REMOVE, &[&u32b(1), &s(b"/x")]))
            .is_empty()
    );
}

#[test]
fn writes_to_a_guessed_handle_before_its_reply_are_counted() {
    // OpenSSH's handles are predictable; a client may pipeline OPEN and WRITE
    let mut tap = SftpTap::default();
    let op = [
        packet(FXP_OPEN, &[&u32b(1), &s(b"/tmp/x"), &u32b(0x1a), &u32b(0)]),
        packet(
            FXP_WRITE,
            &[&u32b(2), &s(b"\0\0\0\0"), &u64b(0), &s(&[1; 77])],
        ),
    ]
    .concat();
    assert!(tap.operator_bytes(&op).is_empty());
    tap.target_bytes(&packet(FXP_HANDLE, &[&u32b(1), &s(b"\0\0\0\0")]));
    let log = tap.operator_bytes(&packet(FXP_CLOSE, &[&u32b(3), &s(b"\0\0\0\0")]));
    assert_eq!(lines(log), ["sftp upload /tmp/x (77 bytes)"]);
    assert!(tap.early_writes.is_empty());
}

#[test]
fn garbage_and_cut_short_fields_never_panic() {
    let mut tap = SftpTap::default();
    let log = tap.operator_bytes(&[0xff; 16]);
    assert!(matches!(&log[..], [Transfer::Unparseable(_)]));
    let mut tap = SftpTap::default();
    assert!(
        tap.operator_bytes(&packet(FXP_WRITE, &[&u32b(1)]))
            .is_empty()
    );
    assert!(
        tap.operator_bytes(&extended(2, "copy-data", &[&s(b"h")]))
            .is_empty()
    );
    assert!(tap.target_bytes(&packet(FXP_DATA, &[&[1, 2]])).is_empty());
}
