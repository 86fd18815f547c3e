//! A Postgres cluster of one test's own, for what the machine's shared cluster must not be put
//! through: a restart. Made with Debian's `initdb` and `pg_ctl` in a folder under /var/tmp
//! (as the `postgres` OS user when the tests run as root: Postgres refuses root), listening on
//! 127.0.0.1 at a free port, trust authentication; stopped and removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub struct PrivatePostgres {
    folder: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

impl PrivatePostgres {
    /// Initialises and starts a cluster; waits until it takes connections.
    pub async fn start() -> PrivatePostgres {
        let bin = newest_bin_dir().expect("Debian's PostgreSQL server (/usr/lib/postgresql/*/bin/initdb)");
        let port = free_port();
        let folder = PathBuf::from(format!("/var/tmp/cqrs-bank-test-pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&folder);
        std::fs::create_dir_all(&folder).unwrap();
        let cluster = PrivatePostgres { folder, bin, port };
        if running_as_root() {
            let status = Command::new("chown").arg("postgres:postgres").arg(&cluster.folder).status().unwrap();
            assert!(status.success(), "chown of {}", cluster.folder.display());
        }
        let data = cluster.data();
        cluster.run("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"]);
        cluster.start_again().await;
        cluster
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Stops the cluster the way a crash or an operator's fast restart does (every session
    /// ended at once, transactions in flight rolled back), keeps it down for `down`, starts it
    /// again and waits until it answers.
    pub async fn restart(&self, down: Duration) {
        self.stop();
        // The outage under test: its clients find the cluster gone for at least this long.
        tokio::time::sleep(down).await;
        self.start_again().await;
    }

    /// A base backup of the running cluster, with the write-ahead log it needs, as an operator
    /// takes one (`pg_basebackup`).
    pub fn base_backup(&self) -> PathBuf {
        let backup = self.folder.join("backup");
        let (port, target) = (self.port.to_string(), backup.display().to_string());
        self.run(
            "pg_basebackup",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-D", &target, "-X", "stream", "-c", "fast"],
        );
        backup
    }

    /// The cluster put back to `backup`, as an operator restores one after a bad deploy: stopped,
    /// its data set aside, the backup in its place, started (it recovers to the backup's end:
    /// the same cluster, timeline and databases, without what was written since).
    pub async fn restore(&self, backup: &Path) {
        self.stop();
        let (data, aside) = (self.data(), format!("{}-before-restore", self.data()));
        let moved = as_cluster_owner(Path::new("/bin/mv")).args([&data, &aside]).status().expect("mv runs");
        assert!(moved.success(), "mv {data} {aside}");
        let copied = as_cluster_owner(Path::new("/bin/cp")).arg("-a").arg(backup).arg(&data).status().expect("cp runs");
        assert!(copied.success(), "cp -a {} {data}", backup.display());
        self.start_again().await;
    }

    fn stop(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "-t", "60", "stop"]);
    }

    async fn start_again(&self) {
        let log = self.folder.join("postgres.log").display().to_string();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} -c max_connections=100 \
             -c fsync=off",
            self.port,
            self.folder.display()
        );
        self.run("pg_ctl", &["-D", &self.data(), "-l", &log, "-o", &options, "-w", "-t", "60", "start"]);
        self.wait_until_it_answers().await;
    }

    fn data(&self) -> String {
        self.folder.join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) {
        let output = as_cluster_owner(&self.bin.join(program))
            .args(args)
            .current_dir(&self.folder)
            .output()
            .expect("the command runs");
        assert!(
            output.status.success(),
            "{program} {args:?}: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    async fn wait_until_it_answers(&self) {
        let url = self.url("postgres");
        testkit::eventually(&format!("the private cluster on port {} answering", self.port), testkit::PATIENCE, || {
            let url = url.clone();
            async move {
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await?;
                sqlx::query("SELECT 1").execute(&mut conn).await.map(drop)
            }
        })
        .await;
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ =
            as_cluster_owner(&self.bin.join("pg_ctl")).args(["-D", data.as_str(), "-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// A private primary and a hot standby of it, fed by streaming replication, started by the
/// scripts' own `scripts/replica-pair` (as README's scale-out recipe starts one), each on a
/// free port; stopped and removed on drop.
pub struct ReplicaPair {
    folder: PathBuf,
    bin: PathBuf,
    pub primary_port: u16,
    pub standby_port: u16,
}

impl ReplicaPair {
    pub async fn start() -> ReplicaPair {
        let bin = newest_bin_dir().expect("Debian's PostgreSQL server (/usr/lib/postgresql/*/bin/initdb)");
        let (primary_port, standby_port) = (free_port(), free_port());
        let folder = PathBuf::from(format!("/var/tmp/cqrs-bank-test-pair-{}-{primary_port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&folder);
        let output = Command::new("bash")
            .arg(replica_pair_script())
            .args(["start", &folder.display().to_string(), &primary_port.to_string(), &standby_port.to_string()])
            .output()
            .expect("scripts/replica-pair runs");
        let pair = ReplicaPair { folder, bin, primary_port, standby_port };
        assert!(
            output.status.success(),
            "scripts/replica-pair start failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        pair
    }

    pub fn primary_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.primary_port)
    }

    pub fn standby_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.standby_port)
    }

    /// Stops the standby at once (its sessions end), as a crash or an operator would.
    pub fn stop_standby(&self) {
        self.pg_ctl(&["-D", &self.data("standby"), "-m", "fast", "-w", "-t", "60", "stop"]);
    }

    pub fn start_standby(&self) {
        let log = self.folder.join("standby.log").display().to_string();
        self.pg_ctl(&["-D", &self.data("standby"), "-l", &log, "-w", "-t", "60", "start"]);
    }

    fn data(&self, member: &str) -> String {
        self.folder.join(member).display().to_string()
    }

    fn pg_ctl(&self, args: &[&str]) {
        let output = as_cluster_owner(&self.bin.join("pg_ctl"))
            .args(args)
            .current_dir(&self.folder)
            .output()
            .expect("pg_ctl runs");
        assert!(output.status.success(), "pg_ctl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
}

impl Drop for ReplicaPair {
    fn drop(&mut self) {
        let _ =
            Command::new("bash").arg(replica_pair_script()).args(["stop", &self.folder.display().to_string()]).output();
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// The scripts' own way to start and stop a primary and its standby.
fn replica_pair_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/replica-pair")
}

/// `binary` run as the clusters' owner: the postgres OS user when the tests run as root
/// (Postgres refuses root), else the tests' own user.
fn as_cluster_owner(binary: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(binary);
        command
    } else {
        Command::new(binary)
    }
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|process| process.uid() == 0)
}

fn newest_bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            Path::new(&bin.join("initdb")).exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
