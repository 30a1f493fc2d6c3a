//! Every input kept in `fuzz/seeds/<target>/` (hand-made seeds, the minimized corpus of the
//! fuzzing runs, and any input that once crashed a target) goes through the same target
//! body as under libfuzzer (`tails_server_core::fuzz_targets`): what fuzzing found stays fixed.

use std::path::PathBuf;

#[test]
fn every_kept_fuzz_input_is_handled() {
    let seeds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let mut total = 0;
    for (name, target) in tails_server_core::fuzz_targets::TARGETS {
        let dir = seeds.join(name);
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{name}: no kept inputs in {}", dir.display());
        for input in &inputs {
            let data = std::fs::read(input).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name} panicked on {}", input.display());
        }
        total += inputs.len();
    }
    eprintln!("{total} kept inputs replayed through {} targets", tails_server_core::fuzz_targets::TARGETS.len());
}
