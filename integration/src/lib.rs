//! Test support shared by the integration suite, `./scripts/demo` and the VM scenarios: a
//! private Tor network of real tors in Docker containers ([`network`]).

pub mod network;
