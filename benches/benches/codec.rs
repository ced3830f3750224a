//! The codec and the subject mapping, per packet.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use roomcast_bus::subject::{untoken, Subjects};
use roomcast_wire::{engineio, socketio};

fn codec(c: &mut Criterion) {
    let args_json = format!("[{{\"id\":1,\"text\":\"{}\"}}]", "x".repeat(70));
    let args = socketio::parse_args(&args_json).expect("args");
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_event", |b| {
        b.iter(|| socketio::encode_event("/", "news", &args, None, 0))
    });
    let packet = format!("2[\"chat\",{}]", &args_json[1..args_json.len() - 1]);
    g.bench_function("decode_event", |b| {
        b.iter(|| socketio::decode(&packet, 10).expect("decodes"))
    });
    let text = Bytes::from(format!("4{packet}"));
    g.bench_function("decode_engineio_text", |b| {
        b.iter(|| engineio::decode_text(text.clone()).expect("decodes"))
    });
    let frames: Vec<engineio::Frame> = (0..16)
        .map(|_| engineio::Frame::Text(Bytes::from(format!("42{}", &packet[1..]))))
        .collect();
    g.bench_function("encode_polling_payload_16", |b| {
        b.iter(|| {
            let mut out = BytesMut::new();
            engineio::encode_payload(&frames, &mut out);
            out
        })
    });
    g.finish();

    let subjects = Subjects::new("roomcast");
    let mut g = c.benchmark_group("subjects");
    g.bench_function("room_ascii", |b| {
        b.iter(|| subjects.room("/", "order-12345"))
    });
    g.bench_function("room_unicode", |b| {
        b.iter(|| subjects.room("/chat", "salle de réunion n°4"))
    });
    let token = roomcast_bus::subject::token("salle de réunion n°4");
    g.bench_function("untoken_unicode", |b| b.iter(|| untoken(&token)));
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
