//! NDR1 benchmarks (being written).
fn main() {}
