//! The edge's fan-out: one bus message for a room → the same buffer queued on
//! every member. Measures decode, local target lookup and the queue pushes per
//! message (the writers' work is outside the timing).

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use roomcast_edge::bench::Room;

fn fanout(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // A ~100-byte Socket.IO event, as the control plane encodes it.
    let text = Bytes::from(format!(
        "42[\"news\",{{\"id\":1,\"text\":\"{}\"}}]",
        "x".repeat(70)
    ));
    let mut group = c.benchmark_group("fanout");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for members in [1_000usize, 10_000, 100_000] {
        let room = rt.block_on(Room::new(members)).expect("room");
        group.throughput(Throughput::Elements(members as u64));
        group.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, _| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let msg = room.message(text.clone());
                    let start = Instant::now();
                    rt.block_on(room.deliver(msg));
                    spent += start.elapsed();
                    let taken = rt.block_on(room.drain());
                    assert_eq!(taken, members, "every member got the packet once");
                }
                spent
            })
        });
        rt.block_on(room.close());
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
