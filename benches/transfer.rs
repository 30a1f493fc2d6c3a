//! Export and import of 20 services x 32 clients (the most tor fits): medians over several
//! runs. Run with `cargo bench --bench transfer`. The cost is dominated by scrypt at the
//! chosen work factor (`tails_server_core::backup::SCRYPT_WORK_FACTOR`), as intended. Also the
//! worst import a file can ask for (`MAX_SCRYPT_WORK_FACTOR`): its time and the peak memory
//! of a process that does only that (what the system service, root, would pay).

mod support;

use std::time::Instant;

use support::{median, peak_rss_mib};
use tails_server_core::backup;
use tails_server_core::names::{ClientName, ServiceName};
use tails_server_core::{AddRequest, Config, Manager, OnConflict};

fn main() {
    // A child of this bench: decrypts one file and reports its own peak memory.
    if let Ok(path) = std::env::var("TRANSFER_BENCH_DECRYPT_ONLY") {
        let file = std::fs::read(path).unwrap();
        let start = Instant::now();
        let document = backup::decrypt(&file, "correct horse battery staple").unwrap();
        println!("{} {:.1} {:.1}", document.services.len(), start.elapsed().as_secs_f64() * 1e3, peak_rss_mib());
        return;
    }
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

    // The worst a backup file may ask for, in a process of its own.
    for factor in [backup::SCRYPT_WORK_FACTOR, backup::MAX_SCRYPT_WORK_FACTOR] {
        let document = Manager::open(config("source")).unwrap().export(&[]).unwrap();
        let mut recipient = age::scrypt::Recipient::new(age::secrecy::SecretString::from(passphrase.to_owned()));
        recipient.set_work_factor(factor);
        let encryptor = age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient)).unwrap();
        let mut file = Vec::new();
        let mut writer = encryptor.wrap_output(&mut file).unwrap();
        std::io::Write::write_all(&mut writer, &document.to_json()).unwrap();
        writer.finish().unwrap();
        let path = root.path().join(format!("factor-{factor}.age"));
        std::fs::write(&path, &file).unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .env("TRANSFER_BENCH_DECRYPT_ONLY", &path)
            .output()
            .unwrap();
        let line = String::from_utf8(out.stdout).unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        println!(
            "decrypt at work factor {factor}{}: {:>8} ms, peak memory of the process {:>7} MiB",
            if factor == backup::MAX_SCRYPT_WORK_FACTOR { " (the most accepted)" } else { " (export's)" },
            fields[1],
            fields[2]
        );
    }
}
