//! `merpatid`, the Merpati node daemon.
fn main() {}
