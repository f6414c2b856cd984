//! The controller crate's library: what `strait-controller` and `straitctl` share.

pub mod analyze;
