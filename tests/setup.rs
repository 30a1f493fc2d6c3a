//! `tails-server setup` on Tails' layout under a temporary root, with the real dpkg-deb and
//! apt-get: the package becomes installable from the local repository through the lists
//! alone (what Additional Software does offline at login), tps's files keep what they held,
//! and `--undo` takes back exactly what setup added. Tails' own mounts (the Persistent
//! Storage, Additional Software's lists) and tps's user are proven in the VM tests.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{dir_contents, Run};

struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("live/persistence/TailsData_unlocked")).unwrap();
        Root { dir }
    }

    fn persistent(&self, name: &str) -> PathBuf {
        self.dir.path().join("live/persistence/TailsData_unlocked").join(name)
    }

    fn setup(&self, args: &[&str]) -> Run {
        let root = self.dir.path().to_str().unwrap();
        Command::new(env!("CARGO_BIN_EXE_tails-server"))
            .args(["setup", "--root", root])
            .args(args)
            .output()
            .unwrap()
            .into()
    }

    /// The version of tails-server apt would install, from the lists setup wrote and the
    /// source it added.
    fn candidate(&self) -> Option<String> {
        self.candidate_of("tails-server")
    }

    fn candidate_of(&self, package: &str) -> Option<String> {
        let root = self.dir.path();
        let out = Command::new("apt-cache")
            .arg(format!("-oDir::State::Lists={}", root.join("var/lib/apt/lists").display()))
            .arg(format!("-oDir::Etc::SourceList={}", root.join("etc/apt/sources.list.d/tails-server.list").display()))
            .args(["-oDir::Etc::SourceParts=-", "-oDir::Cache=/nonexistent", "policy", package])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().find_map(|l| l.trim().strip_prefix("Candidate: ").map(str::to_owned)).filter(|c| c != "(none)")
    }
}

/// A real .deb of a package named `package`.
fn deb(dir: &Path, package: &str, version: &str) -> PathBuf {
    let tree = dir.join(format!("{package}-{version}"));
    std::fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(tree.join("usr/share/doc/tails-server")).unwrap();
    std::fs::write(tree.join("usr/share/doc/tails-server/README"), "test package\n").unwrap();
    std::fs::write(
        tree.join("DEBIAN/control"),
        format!(
            "Package: {package}\nVersion: {version}\nArchitecture: amd64\nMaintainer: Test <test@example.org>\n\
             Description: a package for setup's tests\n"
        ),
    )
    .unwrap();
    let out = dir.join(format!("{package}_{version}_amd64.deb"));
    let status = Command::new("dpkg-deb").arg("--build").arg(&tree).arg(&out).output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    out
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn setup_makes_the_package_installable_offline_keeps_tps_files_and_undo_takes_it_back() {
    let root = Root::new();
    let debs = tempfile::tempdir().unwrap();
    let first = deb(debs.path(), "tails-server", "0.1.0-1");
    if !is_root() {
        root.setup(&["--deb", first.to_str().unwrap()]).fails_with("only root may do");
        return;
    }
    // What the user already had: a persistent folder and a package in Additional Software.
    let other_feature = "/home/amnesia/Persistent\tsource=Persistent\n";
    std::fs::write(root.persistent("persistence.conf"), other_feature).unwrap();
    std::fs::write(root.persistent("live-additional-software.conf"), "mumble-server").unwrap();

    let run = root.setup(&["--deb", first.to_str().unwrap()]).ok();
    assert!(run.stdout.contains("done:    tails-server in Additional Software"), "{}", run.stdout);
    assert_eq!(root.candidate().as_deref(), Some("0.1.0-1"), "apt installs it from the lists alone");
    let release = std::fs::read_to_string(root.persistent("tails-server-apt/Release")).unwrap();
    assert!(release.contains("\nDate: Thu, 01 Jan 1970 00:00:00 UTC\n"), "never in apt's future: {release}");
    assert_eq!(
        std::fs::read_to_string(root.persistent("persistence.conf")).unwrap(),
        format!("{other_feature}/etc/apt/sources.list.d\tsource=apt-sources.list.d,link\n")
    );
    // Written as Tails writes it: sorted, no final newline.
    assert_eq!(
        std::fs::read_to_string(root.persistent("live-additional-software.conf")).unwrap(),
        "mumble-server\ntails-server"
    );
    let mode = |p: &Path| std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions()) & 0o777;
    assert_eq!(mode(&root.persistent("persistence.conf")), 0o600, "tps refuses any other mode");
    assert_eq!(mode(&root.persistent("tails-server")), 0o700);
    let link = root.dir.path().join("etc/apt/sources.list.d/tails-server.list");
    assert_eq!(std::fs::read_link(&link).unwrap(), root.persistent("apt-sources.list.d/tails-server.list"));

    // Again: nothing to change but the index it refreshes.
    let again = root.setup(&["--deb", first.to_str().unwrap()]).ok();
    let changed: Vec<&str> = again.stdout.lines().filter(|l| l.starts_with("done:")).collect();
    assert_eq!(changed, ["done:    apt's index of the local repository, in the persisted lists"], "{}", again.stdout);

    // An upgrade replaces the package in the repository.
    let second = deb(debs.path(), "tails-server", "0.2.0-1");
    root.setup(&["--deb", second.to_str().unwrap()]).ok();
    assert_eq!(root.candidate().as_deref(), Some("0.2.0-1"));
    let held: Vec<String> = std::fs::read_dir(root.persistent("tails-server-apt"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".deb"))
        .collect();
    assert_eq!(held, ["tails-server_0.2.0-1_amd64.deb"]);

    // A service's store is there; undo keeps it and takes the rest back.
    std::fs::write(root.persistent("tails-server/keep-me"), "services").unwrap();
    root.setup(&["--undo"]).ok();
    assert_eq!(std::fs::read_to_string(root.persistent("persistence.conf")).unwrap(), other_feature);
    assert_eq!(std::fs::read_to_string(root.persistent("live-additional-software.conf")).unwrap(), "mumble-server");
    assert!(!root.persistent("tails-server-apt").exists() && !root.persistent("apt-sources.list.d").exists());
    assert!(std::fs::symlink_metadata(&link).is_err());
    assert_eq!(std::fs::read_to_string(root.persistent("tails-server/keep-me")).unwrap(), "services");
    // And undo again changes nothing.
    let again = root.setup(&["--undo"]).ok();
    assert!(!again.stdout.contains("done:"), "{}", again.stdout);
}

/// The window comes as a package of its own (a computer without a desktop needs no GTK):
/// setup takes both, Additional Software installs both, an upgrade of either alone keeps the
/// other installable, and undo takes both back.
#[test]
fn setup_takes_the_windows_package_beside_tails_servers() {
    if !is_root() {
        return;
    }
    let root = Root::new();
    let debs = tempfile::tempdir().unwrap();
    let server = deb(debs.path(), "tails-server", "0.1.0-1");
    let gui = deb(debs.path(), "tails-server-gui", "0.1.0-1");
    let arg = |p: &Path| p.to_str().unwrap().to_owned();
    // Listed by Tails' own "Install Every Time" after `apt install ./….deb`: not set up.
    std::fs::write(root.persistent("live-additional-software.conf"), "tails-server").unwrap();
    let before = dir_contents(root.dir.path());
    root.setup(&["--deb", &arg(&gui)]).fails_with("tails-server-gui needs tails-server, which is not set up");
    assert_eq!(dir_contents(root.dir.path()), before, "nothing written");

    let run = root.setup(&["--deb", &arg(&server), "--deb", &arg(&gui)]).ok();
    assert!(run.stdout.contains("tails-server and tails-server-gui in Additional Software"), "{}", run.stdout);
    assert_eq!(root.candidate().as_deref(), Some("0.1.0-1"));
    assert_eq!(root.candidate_of("tails-server-gui").as_deref(), Some("0.1.0-1"));
    assert_eq!(
        std::fs::read_to_string(root.persistent("live-additional-software.conf")).unwrap(),
        "tails-server\ntails-server-gui"
    );
    // tails-server upgraded alone: the window stays installable; then the window alone.
    let newer = deb(debs.path(), "tails-server", "0.2.0-1");
    root.setup(&["--deb", &arg(&newer)]).ok();
    assert_eq!(root.candidate().as_deref(), Some("0.2.0-1"));
    assert_eq!(root.candidate_of("tails-server-gui").as_deref(), Some("0.1.0-1"));
    let newer_gui = deb(debs.path(), "tails-server-gui", "0.2.0-1");
    root.setup(&["--deb", &arg(&newer_gui)]).ok();
    assert_eq!(root.candidate_of("tails-server-gui").as_deref(), Some("0.2.0-1"));
    assert_eq!(root.candidate().as_deref(), Some("0.2.0-1"));

    root.setup(&["--undo"]).ok();
    assert_eq!(std::fs::read_to_string(root.persistent("live-additional-software.conf")).unwrap(), "");
    assert!(!root.persistent("tails-server-apt").exists());
}

/// A folder of downloads with older versions beside the new one, as `--deb
/// tails-server_*.deb` expands it: the newest of each package is set up, as dpkg orders
/// versions (an epoch above any version without one), and the others are said to be left out.
#[test]
fn setup_sets_up_the_newest_of_the_versions_a_glob_gives() {
    if !is_root() {
        return;
    }
    let root = Root::new();
    let debs = tempfile::tempdir().unwrap();
    let arg = |p: PathBuf| p.to_str().unwrap().to_owned();
    let old = arg(deb(debs.path(), "tails-server", "0.1.0-1"));
    let epoch = arg(deb(debs.path(), "tails-server", "1:0.0.1-1"));
    let newer = arg(deb(debs.path(), "tails-server", "0.10.0-1"));
    let run = root.setup(&["--deb", &old, &newer, &epoch]).ok();
    assert_eq!(root.candidate().as_deref(), Some("1:0.0.1-1"));
    for left_out in [&old, &newer] {
        assert!(
            run.stdout.contains(&format!("{left_out} left out: tails-server 1:0.0.1-1 is newer")),
            "{}",
            run.stdout
        );
    }
    let repository = root.persistent("tails-server-apt");
    let held: Vec<String> =
        std::fs::read_dir(&repository).unwrap().filter_map(|e| e.unwrap().file_name().into_string().ok()).collect();
    assert!(held.contains(&"tails-server_1%3a0.0.1-1_amd64.deb".to_owned()), "as apt names it: {held:?}");
    assert!(!held.iter().any(|f| f.contains("0.1.0") || f.contains("0.10.0")), "{held:?}");

    // Without the epoch: 0.10.0 is newer than 0.1.0, whatever the order given.
    let root = Root::new();
    let run = root.setup(&["--deb", &newer, "--deb", &old]).ok();
    assert_eq!(root.candidate().as_deref(), Some("0.10.0-1"));
    assert!(run.stdout.contains(&format!("{old} left out: tails-server 0.10.0-1 is newer")), "{}", run.stdout);
    let copy = format!("{old}.copy.deb");
    std::fs::copy(&old, &copy).unwrap();
    let run = root.setup(&["--deb", &old, &copy]).ok();
    assert!(run.stdout.contains(&format!("{copy} left out: the same version as {old}")), "{}", run.stdout);
}

#[test]
fn setup_uses_an_existing_sources_feature_and_leaves_it_in_place() {
    if !is_root() {
        return; // the test above checks the refusal without root
    }
    let root = Root::new();
    let debs = tempfile::tempdir().unwrap();
    let package = deb(debs.path(), "tails-server", "0.1.0-1");
    // Tails' Dangerzone instructions link the sources to another folder.
    let conf = "/etc/apt/sources.list.d\tsource=apt/sources,link\n";
    std::fs::write(root.persistent("persistence.conf"), conf).unwrap();
    std::fs::create_dir_all(root.persistent("apt/sources")).unwrap();
    std::fs::write(root.persistent("apt/sources/dangerzone.sources"), "Types: deb\n").unwrap();

    root.setup(&["--deb", package.to_str().unwrap()]).ok();
    assert!(root.persistent("apt/sources/tails-server.list").is_file());
    assert_eq!(std::fs::read_to_string(root.persistent("persistence.conf")).unwrap(), conf, "no second feature");
    assert_eq!(root.candidate().as_deref(), Some("0.1.0-1"));

    root.setup(&["--undo"]).ok();
    assert_eq!(std::fs::read_to_string(root.persistent("persistence.conf")).unwrap(), conf);
    assert!(root.persistent("apt/sources/dangerzone.sources").is_file());
    assert!(!root.persistent("apt/sources/tails-server.list").exists());
}

#[test]
fn setup_refuses_what_is_not_a_tails_server_package_and_changes_nothing() {
    if !is_root() {
        return;
    }
    let root = Root::new();
    let debs = tempfile::tempdir().unwrap();
    std::fs::write(root.persistent("persistence.conf"), "/home/amnesia/Persistent\tsource=Persistent\n").unwrap();
    let before = dir_contents(root.dir.path());

    let text = debs.path().join("notes.txt");
    std::fs::write(&text, "not a package").unwrap();
    root.setup(&["--deb", text.to_str().unwrap()])
        .fails_with("notes.txt is not a package setup can use: not a Debian package");
    let other = deb(debs.path(), "mumble-server", "1.0");
    root.setup(&["--deb", other.to_str().unwrap()]).fails_with("it is the package \"mumble-server\", not tails-server");
    root.setup(&["--deb", "/nonexistent.deb"]).fails_with("/nonexistent.deb is not a package setup can use");
    root.setup(&[]).fails_with("--deb <FILE>");
    assert_eq!(dir_contents(root.dir.path()), before, "nothing written");
}

#[test]
fn setup_with_lists_the_programs_of_the_chosen_kinds_in_additional_software() {
    if !is_root() {
        return;
    }
    let root = Root::new();
    std::fs::write(root.persistent("live-additional-software.conf"), "keepassxc").unwrap();
    let before = dir_contents(root.dir.path());
    root.setup(&["--with", "custom"]).fails_with("a custom service runs no program of its own");
    root.setup(&["--with", "mumble,nope"]).fails_with("\"nope\"");
    assert_eq!(dir_contents(root.dir.path()), before, "a bad kind writes nothing");

    let run = root.setup(&["--with", "mumble,sftp"]).ok();
    assert!(
        run.stdout.contains("done:    mumble-server openssh-server in Additional Software (mumble, sftp)"),
        "{}",
        run.stdout
    );
    // Written as Tails writes it: sorted, no final newline; what was there stays.
    assert_eq!(
        std::fs::read_to_string(root.persistent("live-additional-software.conf")).unwrap(),
        "keepassxc\nmumble-server\nopenssh-server"
    );
    let again = root.setup(&["--with", "sftp"]).ok();
    assert!(again.stdout.contains("already: openssh-server in Additional Software"), "{}", again.stdout);
}
