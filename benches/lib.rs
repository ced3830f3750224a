//! Benchmarks of roomcast (`cargo bench -p roomcast-benches`); the code is in
//! `benches/`, this crate has none of its own.
