//! The latency floor of a fan-out on this machine: what one write of a small
//! WebSocket frame to a loopback TCP socket costs, with a reader draining the
//! other end on another thread (as a client does). A server that writes each
//! event to N sockets with one write each cannot deliver to the last of them
//! sooner than N × this ÷ its cores; BENCHMARKS.md compares the measured p99
//! with that.

use std::io::{IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// A server frame of the broadcast scenario: a 2-byte header and ~110 bytes
/// of Socket.IO event.
const PAYLOAD: usize = 110;

fn loopback_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    server.set_nodelay(true).expect("nodelay");
    (server, client)
}

fn floor(c: &mut Criterion) {
    let (mut server, mut client) = loopback_pair();
    // The client reads everything until the server's side closes.
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while matches!(client.read(&mut buf), Ok(n) if n > 0) {}
    });
    let header = [0x81u8, PAYLOAD as u8];
    let payload = vec![b'x'; PAYLOAD];
    let mut group = c.benchmark_group("loopback_write");
    group.throughput(Throughput::Elements(1));
    group.bench_function("writev_header_and_payload", |b| {
        b.iter(|| {
            let slices = [IoSlice::new(&header), IoSlice::new(&payload)];
            let n = server.write_vectored(&slices).expect("writev");
            assert_eq!(n, header.len() + PAYLOAD, "a short write on loopback");
        })
    });
    group.finish();
    drop(server);
    drain.join().expect("drain");
}

criterion_group!(benches, floor);
criterion_main!(benches);
