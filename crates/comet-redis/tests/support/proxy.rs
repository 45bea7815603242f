//! The TCP fault proxy lives with the chaos suite, which injects the same faults.

#[allow(unused_imports)] // not every test file injects faults
pub use comet_chaos::proxy::FaultProxy;
