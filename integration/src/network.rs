//! A private Tor network (TestingTorNetwork) in Docker containers, one tor per container,
//! all with host networking on one address of this machine (127.0.0.1 by default; another
//! local address when a virtual machine's tor joins the network): four directory
//! authorities (which are also the relays; onion-service paths need four), the
//! onion-service tor that tails-server drives, two client tors and an HTTP backend. Recipe
//! and timings: shared/reference/private-tor-network/REPORT.md.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use testcontainers::core::wait::ExitWaitStrategy;
use testcontainers::core::{Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use tails_server_core::tor::{ControlConfig, ControlTarget, TorControl};

pub const LABEL: &str = "org.tails-server.test";
const AUTHORITIES: u16 = 4;

pub type Container = ContainerAsync<GenericImage>;

/// Ports, all on the network's address, relative to a base.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub base: u16,
    pub address: Ipv4Addr,
}

impl Ports {
    pub fn auth_or(self, i: u16) -> u16 {
        self.base + i
    }
    pub fn auth_dir(self, i: u16) -> u16 {
        self.base + 10 + i
    }
    pub fn hs_control(self) -> u16 {
        self.base + 50
    }
    pub fn hs_socks(self) -> u16 {
        self.base + 51
    }
    pub fn client_socks(self, i: u16) -> u16 {
        self.base + 60 + 2 * i
    }
    pub fn client_control(self, i: u16) -> u16 {
        self.base + 61 + 2 * i
    }
    pub fn backend(self, i: u16) -> u16 {
        self.base + 80 + i
    }
    fn all(self) -> Vec<u16> {
        let mut v: Vec<u16> = (0..AUTHORITIES).flat_map(|i| [self.auth_or(i), self.auth_dir(i)]).collect();
        v.extend([self.hs_control(), self.hs_socks(), self.backend(0), self.backend(1)]);
        v.extend((0..2).flat_map(|i| [self.client_socks(i), self.client_control(i)]));
        v
    }
    fn free(self) -> bool {
        self.all().into_iter().all(|p| std::net::TcpListener::bind((self.address, p)).is_ok())
    }
}

pub struct Network {
    pub run_id: String,
    pub image: (String, String),
    pub work: tempfile::TempDir,
    pub ports: Ports,
    pub password: String,
    pub authorities: Vec<Container>,
    pub hs: Option<Container>,
    pub clients: Vec<Container>,
    pub backend: Option<Container>,
    pub started: Instant,
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Removes containers that earlier, interrupted runs left behind: those labelled with the
/// process id of a run that no longer exists (a concurrent run's containers are left alone).
/// With `own`, removes this run's containers.
pub fn remove_leftovers(own: Option<&str>) {
    let listing = sh(Command::new("docker").args([
        "ps",
        "-a",
        "--filter",
        &format!("label={LABEL}"),
        "--format",
        &format!("{{{{.ID}}}} {{{{.Label \"{LABEL}\"}}}}"),
    ]));
    let stale: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, run)| Some(*run) == own || !Path::new(&format!("/proc/{run}")).exists())
        .map(|(id, _)| id)
        .collect();
    if !stale.is_empty() {
        if own.is_none() {
            eprintln!("removing {} leftover test container(s)", stale.len());
        }
        let _ = Command::new("docker").arg("rm").arg("-f").args(&stale).output();
    }
}

/// Builds the tor image if this recipe has not been built yet; returns (name, tag).
pub fn image() -> (String, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("image/build.sh");
    let tag = sh(Command::new("sh").arg(script));
    let tag = tag.trim();
    let (name, tag) = tag.rsplit_once(':').expect("name:tag");
    (name.to_owned(), tag.to_owned())
}

fn choose_ports(address: Ipv4Addr) -> Ports {
    // A fixed base lets the authority keys (which name their DirPort) be cached.
    for base in [27000u16, 27100, 27200, 27300] {
        if (Ports { base, address }).free() {
            return Ports { base, address };
        }
    }
    panic!("no free block of ports found in 27000-27399 on {address}");
}

fn key_cache(image_tag: &str, ports: Ports) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let at = if ports.address == Ipv4Addr::LOCALHOST { String::new() } else { format!("-{}", ports.address) };
    target.join("tor-test-keys").join(format!("{image_tag}-{}{at}", ports.base))
}

impl Network {
    fn tor_request(&self, role: &str, args: &[&str]) -> testcontainers::ContainerRequest<GenericImage> {
        let mut cmd = vec!["tor".to_owned(), "-f".to_owned(), format!("/net/{role}/torrc")];
        cmd.extend(args.iter().map(|s| s.to_string()));
        GenericImage::new(self.image.0.clone(), self.image.1.clone())
            .with_wait_for(WaitFor::Nothing)
            .with_cmd(cmd)
            .with_network("host")
            .with_mount(Mount::bind_mount(self.work.path().to_str().unwrap(), "/net"))
            .with_label(LABEL, self.run_id.clone())
            .with_container_name(format!("tails-server-test-{}-{role}", self.run_id))
    }

    pub fn dir(&self, role: &str) -> PathBuf {
        self.work.path().join(role)
    }

    /// The last `lines` lines of every tor's notice and onion-service (`[rend]info`) logs,
    /// for a failed trial: what the onion-service tor, the clients and the authorities saw
    /// (consensus, HSDirs, uploads, fetches).
    pub fn log_tails(&self, lines: usize) -> String {
        let roles = ["hs", "client0", "client1"].into_iter().map(str::to_owned);
        let roles = roles.chain((0..AUTHORITIES).map(|i| format!("auth{i}")));
        let mut out = String::new();
        for role in roles {
            for file in ["notice.log", "rend.log"] {
                let log = fs::read_to_string(self.dir(&format!("{role}/{file}"))).unwrap_or_default();
                let all: Vec<&str> = log.lines().collect();
                out.push_str(&format!("--- {role}/{file} (last {lines} lines)\n"));
                for line in &all[all.len().saturating_sub(lines)..] {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Starts the whole network on 127.0.0.1 and waits until the onion-service tor and both
    /// clients report 100 % bootstrap (`status/bootstrap-phase`, no sleeps).
    pub async fn start() -> Network {
        Self::start_on(Ipv4Addr::LOCALHOST).await
    }

    /// The same on another address of this machine: one a virtual machine reaches through
    /// QEMU's user network (connections to it leave from this machine's own stack).
    pub async fn start_on(address: Ipv4Addr) -> Network {
        remove_leftovers(None);
        let image = image();
        let ports = choose_ports(address);
        let run_id = format!("{}", std::process::id());
        // Bind mounts need a path the Docker daemon sees: this machine's own filesystem.
        let work = tempfile::Builder::new().prefix("tails-server-net-").tempdir().unwrap();
        let mut net = Network {
            run_id,
            image,
            work,
            ports,
            password: "private network password".into(),
            authorities: Vec::new(),
            hs: None,
            clients: Vec::new(),
            backend: None,
            started: Instant::now(),
        };
        net.authority_keys().await;
        net.write_torrcs();
        for i in 0..AUTHORITIES {
            let c = net.tor_request(&format!("auth{i}"), &[]).start().await.expect("start an authority");
            net.authorities.push(c);
        }
        net.backend = Some(net.start_backend().await);
        net.hs = Some(net.tor_request("hs", &[]).start().await.expect("start the onion-service tor"));
        for i in 0..2 {
            let c = net.tor_request(&format!("client{i}"), &[]).start().await.expect("start a client tor");
            net.clients.push(c);
        }
        let deadline = Instant::now() + Duration::from_secs(180);
        net.wait_bootstrapped("hs", &net.hs_control_config(), deadline).await;
        for i in 0..2 {
            net.wait_bootstrapped(&format!("client{i}"), &net.client_control_config(i), deadline).await;
        }
        eprintln!("private Tor network bootstrapped in {:.1} s", net.started.elapsed().as_secs_f64());
        net
    }

    async fn start_backend(&self) -> Container {
        for (i, dir) in ["www0", "www1"].iter().enumerate() {
            let d = self.dir(dir);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("index.html"), format!("hello from backend {i} of run {}\n", self.run_id)).unwrap();
        }
        let script = format!(
            "httpd -p {a}:{} -h /net/www0 && exec httpd -f -p {a}:{} -h /net/www1",
            self.ports.backend(0),
            self.ports.backend(1),
            a = self.ports.address
        );
        GenericImage::new(self.image.0.clone(), self.image.1.clone())
            .with_wait_for(WaitFor::Nothing)
            .with_cmd(["sh", "-c", &script])
            .with_network("host")
            .with_mount(Mount::bind_mount(self.work.path().to_str().unwrap(), "/net"))
            .with_label(LABEL, self.run_id.clone())
            .with_container_name(format!("tails-server-test-{}-backend", self.run_id))
            .start()
            .await
            .expect("start the backend")
    }

    pub fn backend_body(&self, i: u16) -> String {
        format!("hello from backend {i} of run {}\n", self.run_id)
    }

    /// Authority identity keys take ~1.5 s each to make: they are cached per image and
    /// port block under target/.
    async fn authority_keys(&self) {
        let cache = key_cache(&self.image.1, self.ports);
        let complete = (0..AUTHORITIES).all(|i| cache.join(format!("auth{i}/fingerprint")).exists());
        if !complete {
            fs::create_dir_all(self.dir("keygen")).unwrap();
            let mut script = String::from("set -e\n");
            for i in 0..AUTHORITIES {
                let d = format!("/net/keygen/auth{i}");
                script += &format!(
                    "mkdir -p {d}/keys && chmod 700 {d}\n\
                     echo '' | tor-gencert --create-identity-key --passphrase-fd 0 -m 12 -a {a}:{dirport} \
                     -i {d}/keys/authority_identity_key -s {d}/keys/authority_signing_key -c {d}/keys/authority_certificate\n\
                     tor --list-fingerprint --orport 1 --datadirectory {d} --nickname auth{i} --ignore-missing-torrc -f /dev/null >/dev/null\n",
                    dirport = self.ports.auth_dir(i),
                    a = self.ports.address
                );
            }
            fs::write(self.dir("keygen/keygen.sh"), script).unwrap();
            let keygen = GenericImage::new(self.image.0.clone(), self.image.1.clone())
                .with_wait_for(WaitFor::exit(ExitWaitStrategy::new().with_exit_code(0)))
                .with_cmd(["sh", "/net/keygen/keygen.sh"])
                .with_network("none")
                .with_mount(Mount::bind_mount(self.work.path().to_str().unwrap(), "/net"))
                .with_label(LABEL, self.run_id.clone())
                .start()
                .await
                .expect("generate authority keys");
            drop(keygen);
            for i in 0..AUTHORITIES {
                let from = self.dir(&format!("keygen/auth{i}"));
                let to = cache.join(format!("auth{i}"));
                copy_dir(&from, &to);
            }
        }
        for i in 0..AUTHORITIES {
            copy_dir(&cache.join(format!("auth{i}")), &self.dir(&format!("auth{i}")));
        }
    }

    fn dirauthority_lines(&self) -> String {
        let mut lines = String::new();
        for i in 0..AUTHORITIES {
            let d = self.dir(&format!("auth{i}"));
            let fingerprint = fs::read_to_string(d.join("fingerprint")).unwrap();
            let fingerprint = fingerprint.split_whitespace().nth(1).unwrap().to_owned();
            let cert = fs::read_to_string(d.join("keys/authority_certificate")).unwrap();
            let v3ident = cert.lines().find_map(|l| l.strip_prefix("fingerprint ")).unwrap().trim().to_owned();
            lines += &format!(
                "DirAuthority auth{i} orport={} no-v2 v3ident={v3ident} {}:{} {fingerprint}\n",
                self.ports.auth_or(i),
                self.ports.address,
                self.ports.auth_dir(i)
            );
        }
        lines
    }

    /// The lines a tor outside the containers needs to join this network as a client or an
    /// onion service (a virtual machine's tor, which reaches the network's address).
    pub fn joining_torrc(&self) -> String {
        format!("TestingTorNetwork 1\nPathsNeededToBuildCircuits 0.67\nClientUseIPv6 0\n{}", self.dirauthority_lines())
    }

    fn common_torrc(&self, role: &str) -> String {
        format!(
            "TestingTorNetwork 1\nDataDirectory /net/{role}\nNickname {nick}\nLog notice file /net/{role}/notice.log\nLog [rend]info file /net/{role}/rend.log\n\
             SafeLogging 0\nShutdownWaitLength 0\nSandbox 0\nPathsNeededToBuildCircuits 0.67\n\
             TestingDirAuthVoteGuard *\nTestingDirAuthVoteHSDir *\nTestingDirAuthVoteExit *\n\
             TestingMinExitFlagThreshold 0\nClientUseIPv6 0\nGeoIPFile /dev/null\nGeoIPv6File /dev/null\n{}",
            self.dirauthority_lines(),
            nick = role.replace(['-', '_'], "")
        )
    }

    fn write_torrcs(&self) {
        for i in 0..AUTHORITIES {
            let role = format!("auth{i}");
            let torrc = format!(
                "{}SocksPort 0\nAddress {a}\nORPort {a}:{}\nDirPort {a}:{}\nContactInfo {role}@test.invalid\n\
                 ExitRelay 0\nExitPolicy reject *:*\nAuthoritativeDirectory 1\nV3AuthoritativeDirectory 1\nAssumeReachable 1\n\
                 TestingV3AuthInitialVotingInterval 5\nTestingV3AuthInitialVoteDelay 2\nTestingV3AuthInitialDistDelay 2\n\
                 V3AuthVotingInterval 10\nV3AuthVoteDelay 2\nV3AuthDistDelay 2\nV3AuthNIntervalsValid 2\n\
                 AuthDirVoteStableGuaranteeMinUptime 0\nAuthDirVoteStableGuaranteeMTBF 0\n",
                self.common_torrc(&role),
                self.ports.auth_or(i),
                self.ports.auth_dir(i),
                a = self.ports.address
            );
            write_private(&self.dir(&role), &torrc);
        }
        let hashed = hash_password(&self.password);
        let hs = format!(
            "{}SocksPort {a}:{} ExtendedErrors\nControlPort {a}:{}\nCookieAuthentication 1\nHashedControlPassword {hashed}\n",
            self.common_torrc("hs"),
            self.ports.hs_socks(),
            self.ports.hs_control(),
            a = self.ports.address
        );
        write_private(&self.dir("hs"), &hs);
        for i in 0..2 {
            let role = format!("client{i}");
            let dir = self.dir(&role);
            let torrc = format!(
                "{}SocksPort {a}:{} ExtendedErrors\nControlPort {a}:{}\nCookieAuthentication 1\n\
                 ClientOnionAuthDir /net/{role}/onion_auth\n",
                self.common_torrc(&role),
                self.ports.client_socks(i),
                self.ports.client_control(i),
                a = self.ports.address
            );
            write_private(&dir, &torrc);
            fs::create_dir_all(dir.join("onion_auth")).unwrap();
            chmod(&dir.join("onion_auth"), 0o700);
        }
    }

    pub fn hs_control_config(&self) -> ControlConfig {
        let mut c =
            ControlConfig::new(ControlTarget::Tcp(format!("{}:{}", self.ports.address, self.ports.hs_control())));
        c.cookie_file = Some(self.dir("hs/control_auth_cookie"));
        c
    }

    pub fn client_control_config(&self, i: u16) -> ControlConfig {
        let mut c =
            ControlConfig::new(ControlTarget::Tcp(format!("{}:{}", self.ports.address, self.ports.client_control(i))));
        c.cookie_file = Some(self.dir(&format!("client{i}/control_auth_cookie")));
        c
    }

    async fn wait_bootstrapped(&self, role: &str, config: &ControlConfig, deadline: Instant) {
        loop {
            let last;
            match TorControl::connect(config).await {
                Ok(mut tor) => match tor.bootstrap_progress().await {
                    Ok(100) => return,
                    Ok(p) => last = format!("at {p} %"),
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                // What tor itself said, for whoever reads the failure.
                let log = fs::read_to_string(self.dir(&format!("{role}/notice.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
                panic!("{role} ({}) did not bootstrap ({last}); its log ends:\n{}", config.target, tail.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops the onion-service tor's container and starts it again: all ADD_ONION
    /// services die with it and tor writes a new cookie.
    pub async fn restart_hs(&self) {
        let hs = self.hs.as_ref().unwrap();
        hs.stop_with_timeout(Some(5)).await.expect("stop the onion-service tor");
        let _ = fs::remove_file(self.dir("hs/control_auth_cookie"));
        hs.start().await.expect("start the onion-service tor again");
        self.wait_bootstrapped("hs", &self.hs_control_config(), Instant::now() + Duration::from_secs(120)).await;
    }

    /// Stops client tor `i`'s container and starts it again: it forgets every client key
    /// it was given, as a friend's tor on Tails does at every restart.
    pub async fn restart_client(&self, i: u16) {
        let client = &self.clients[usize::from(i)];
        client.stop_with_timeout(Some(5)).await.expect("stop the client tor");
        let _ = fs::remove_file(self.dir(&format!("client{i}/control_auth_cookie")));
        client.start().await.expect("start the client tor again");
        let role = format!("client{i}");
        self.wait_bootstrapped(&role, &self.client_control_config(i), Instant::now() + Duration::from_secs(120)).await;
    }

    /// Freezes the onion-service tor (docker pause): its control port accepts connections
    /// but never answers, and the services it runs stay up, as when tails-server cannot
    /// reach a tor that is still running.
    pub async fn pause_hs(&self) {
        self.hs.as_ref().unwrap().pause().await.expect("pause the onion-service tor");
    }

    pub async fn unpause_hs(&self) {
        self.hs.as_ref().unwrap().unpause().await.expect("unpause the onion-service tor");
    }

    /// Removes every container explicitly (testcontainers would too, on drop).
    pub async fn shutdown(mut self) {
        let mut all: Vec<Container> = Vec::new();
        all.append(&mut self.clients);
        all.extend(self.hs.take());
        all.extend(self.backend.take());
        all.append(&mut self.authorities);
        for c in all {
            let _ = c.rm().await;
        }
        remove_leftovers(Some(&self.run_id));
    }
}

fn hash_password(password: &str) -> String {
    // tor --hash-password in a throw-away container would work too; the host has tor.
    let out = sh(Command::new("tor").args(["--quiet", "--hash-password", password]));
    out.trim().lines().last().unwrap().to_owned()
}

fn write_private(dir: &Path, torrc: &str) {
    fs::create_dir_all(dir).unwrap();
    chmod(dir, 0o700);
    fs::write(dir.join("torrc"), torrc).unwrap();
}

pub fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    chmod(to, 0o700);
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}
