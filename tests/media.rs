//! Faults of the medium, on a real file system: the store on a small tmpfs that fills up in
//! the middle of changes, then is remounted read-only (as a USB stick is after an I/O
//! error). Each time the error says what happened, nothing acknowledged is lost, a refused
//! change is absent, reads keep working, and once the medium is healthy again the next
//! change works. Needs root (mount); CI runs as root.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::TestEnv;

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, size_kib: u64) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let options = format!("size={size_kib}k,mode=0700");
        let status = Command::new("mount").args(["-t", "tmpfs", "-o", &options, "tails-server-test"]).arg(dir).status();
        assert!(status.unwrap().success(), "mount a tmpfs on {}", dir.display());
        SmallDisk { dir: dir.to_owned() }
    }

    fn remount(&self, mode: &str) {
        let status = Command::new("mount").args(["-o", &format!("remount,{mode}")]).arg(&self.dir).status();
        assert!(status.unwrap().success(), "remount {mode}");
    }

    fn free_bytes(&self) -> u64 {
        let path = std::ffi::CString::new(self.dir.to_str().unwrap()).unwrap();
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut stat) }, 0);
        stat.f_bavail * stat.f_frsize
    }

    /// Fills the disk until `leave` bytes are free (a file of zeros, written for real).
    fn fill(&self, leave: u64) -> PathBuf {
        let path = self.dir.join("filler");
        let size = self.free_bytes().saturating_sub(leave);
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        let mut written = 0;
        while written < size {
            let n = (size - written).min(4096) as usize;
            if std::io::Write::write_all(&mut file, &block[..n]).is_err() {
                break;
            }
            written += n as u64;
        }
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn clients(env: &TestEnv) -> Vec<String> {
    let info = env.service("blog");
    info["clients"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_full_then_read_only_medium_gives_clear_errors_and_loses_nothing() {
    if tails_server_core::unix::euid() != 0 {
        eprintln!("skipped: mounting a small file system needs root");
        return;
    }
    let env = TestEnv::new();
    let disk = SmallDisk::mount(&env.state_dir(), 600);
    env.run(&["add", "custom", "--name", "blog", "--local-port", "8080"]).ok();
    let mut acknowledged = vec!["client-1".to_owned()];

    // The disk fills up at a different moment of the change each time.
    let mut refused = 0;
    for (round, leave_kib) in [0u64, 4, 8, 16, 24, 32, 48, 64, 96, 128].into_iter().enumerate() {
        let filler = disk.fill(leave_kib * 1024);
        let name = format!("friend-{round}");
        let out = env.run(&["client", "add", "blog", &name]);
        // A read on the full disk works and shows every acknowledged client.
        let listed = env.run(&["--format", "json", "list"]).ok();
        assert!(listed.stdout.contains("blog"), "{}", listed.stdout);
        match out.code {
            0 => acknowledged.push(name.clone()),
            _ => {
                refused += 1;
                assert!(
                    out.stderr.contains("no space left on its device"),
                    "{leave_kib} KiB free: the error says the disk is full:\n{}",
                    out.stderr
                );
            }
        }
        std::fs::remove_file(&filler).unwrap();
        let now = clients(&env);
        assert_eq!(now, acknowledged, "{leave_kib} KiB free: acknowledged clients kept, a refused one absent");
    }
    assert!(refused > 0, "the disk never filled up at a change");
    // Healthy again: the next change works.
    env.run(&["client", "add", "blog", "after-the-full-disk"]).ok();
    acknowledged.push("after-the-full-disk".into());

    // The stick goes read-only after an I/O error.
    let backup = env.root.path().join("rescue.age");
    let pass = env.root.path().join("pass");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    disk.remount("ro");
    assert_eq!(clients(&env), acknowledged, "reads work on a read-only medium");
    env.run(&["client", "add", "blog", "late"]).fails_with("its file system is read-only");
    env.run(&["export", "--output", backup.to_str().unwrap(), "--passphrase-file", pass.to_str().unwrap()]).ok();
    assert!(backup.exists(), "what is stored can be exported from a read-only stick");
    disk.remount("rw");
    env.run(&["client", "add", "blog", "late"]).ok();
    acknowledged.push("late".into());
    assert_eq!(clients(&env), acknowledged);
    eprintln!("{refused} of 10 changes met a full disk");
}
