//! `merpati`, the Merpati command-line client.
fn main() {}
