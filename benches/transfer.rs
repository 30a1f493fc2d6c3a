//! Export and import of 20 services x 32 clients (the most tor fits): medians over several
//! runs. Run with `cargo bench --bench transfer`. The cost is dominated by scrypt at the
//! chosen work factor (`tails_server::backup::SCRYPT_WORK_FACTOR`), as intended.

use std::time::{Duration, Instant};

use tails_server::backup;
use tails_server::names::{ClientName, ServiceName};
use tails_server::{AddRequest, Config, Manager, OnConflict};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let runs = if quick { 1 } else { 7 };
    let root = tempfile::tempdir().unwrap();
    let config = |name: &str| {
        let mut c = Config::new(root.path().join(name));
        c.runtime_dir = Some(root.path().join(format!("{name}.run")));
        c
    };
    {
        let mut manager = Manager::open(config("source")).unwrap();
        for i in 0..20 {
            let mut request = AddRequest::new("custom");
            request.name = Some(ServiceName::new(&format!("s{i}")).unwrap());
            request.local_port = Some(9000 + i);
            let record = manager.add(request).unwrap();
            for c in 2..=32 {
                manager.add_client(&record.name, ClientName::new(&format!("c{c}")).unwrap(), None).unwrap();
            }
        }
    }
    let passphrase = "correct horse battery staple";
    let mut exports = Vec::new();
    let mut encrypted = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let document = Manager::open(config("source")).unwrap().export(&[]).unwrap();
        encrypted = backup::encrypt(&document, passphrase).unwrap();
        exports.push(start.elapsed());
    }
    let mut imports = Vec::new();
    for run in 0..runs {
        let start = Instant::now();
        let document = backup::decrypt(&encrypted, passphrase).unwrap();
        let mut manager = Manager::open(config(&format!("target{run}"))).unwrap();
        document.validate(manager.catalog()).unwrap();
        let report = manager.import(document.services, OnConflict::Fail, false).unwrap();
        assert_eq!(report.added.len(), 20);
        imports.push(start.elapsed());
    }
    if quick {
        println!("transfer bench harness smoke run (debug build: run `cargo bench --bench transfer` for figures)");
        return;
    }
    // The scrypt share: one key derivation at the same work factor.
    let start = Instant::now();
    let _ = backup::decrypt(&encrypted, "wrong passphrase");
    let kdf = start.elapsed();
    println!(
        "tails-server backup benchmark: 20 services x 32 clients, scrypt work factor {} (N = 2^{})",
        backup::SCRYPT_WORK_FACTOR,
        backup::SCRYPT_WORK_FACTOR
    );
    println!("backup size                 {:>8} bytes (ASCII armor)", encrypted.len());
    println!("export (read + encrypt)     median {:>8.1} ms  ({runs} runs)", median(exports).as_secs_f64() * 1e3);
    println!(
        "import (decrypt + validate + one transaction)  median {:>8.1} ms  ({runs} runs)",
        median(imports).as_secs_f64() * 1e3
    );
    println!("of which scrypt alone (a wrong passphrase)    {:>8.1} ms", kdf.as_secs_f64() * 1e3);
}
