//! An idle TLS connection to the PostgreSQL front holds no read buffer: rustls keeps a
//! 4 KiB buffer per connection for the next record, and the patched copy in
//! `vendor/rustls` (see vendor/README.md) lets it go when a read finds nothing to read (an
//! idle operator: `WouldBlock`) and nothing is half-received. Measured on the heap with a
//! counting allocator (this file holds one test, so nothing else allocates meanwhile).

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::alloc::System;
use std::io::{self, Read, Write};

use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

use rustls::{ClientConnection, Connection, ServerConnection};

#[global_allocator]
static ALLOC: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Heap bytes handed out and not had back, since the program started.
fn live() -> isize {
    let stats = ALLOC.stats();
    stats.bytes_allocated as isize - stats.bytes_deallocated as isize + stats.bytes_reallocated
}

/// A socket with nothing to read: what rustls sees from an idle operator.
struct Idle;

impl Read for Idle {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// Moves what `from` has to send into `to` and has `to` process it.
fn pass(from: &mut Connection, to: &mut Connection) {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).unwrap();
    }
    let mut rest = &wire[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest).unwrap();
        to.process_new_packets().unwrap();
    }
}

#[test]
fn an_idle_tls_connection_holds_no_read_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let server_config = gatehouse_pg::tls::server_config(
        &dir.path().join("cert.pem"),
        &dir.path().join("key.pem"),
        true,
    )
    .unwrap();
    let client_config = gatehouse_pg::tls::client_config(gatehouse_core::TlsMode::Require, None)
        .unwrap()
        .unwrap();
    let name = gatehouse_pg::tls::server_name("localhost").unwrap();
    let mut client = Connection::Client(ClientConnection::new(client_config, name).unwrap());
    let mut server = Connection::Server(ServerConnection::new(server_config).unwrap());
    while client.is_handshaking() || server.is_handshaking() {
        pass(&mut client, &mut server);
        pass(&mut server, &mut client);
    }

    let mut received = [0u8; 64];
    for round in 0..3 {
        // a query arrives and is read in full
        let query = format!("SELECT {round}");
        client.writer().write_all(query.as_bytes()).unwrap();
        pass(&mut client, &mut server);
        let n = server.reader().read(&mut received).unwrap();
        assert_eq!(&received[..n], query.as_bytes());

        // the operator goes quiet: the next read finds nothing, and the buffer goes
        let before = live();
        let err = server.read_tls(&mut Idle).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let freed = before - live();
        assert!(
            freed >= 4096,
            "round {round}: an idle read let {freed} bytes go, not the 4 KiB read buffer"
        );
        // and stays gone while the operator stays quiet
        let idle = live();
        assert!(server.read_tls(&mut Idle).is_err());
        assert_eq!(live(), idle, "a second idle read allocated");
    }
}
