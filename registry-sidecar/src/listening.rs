//! Readiness without a health check: is the container's process listening on the agent's port,
//! at an address the gateway can reach? Read as the kernel states it, in the container's network
//! namespace (`/proc/{pid}/net/tcp` and `tcp6`, through the host's procfs at `HOST_PROC`), once
//! `/proc/{pid}/cgroup` shows that the pid is that container's (a pid of another pid namespace, or
//! reused, is never read as the agent's). No exec, no connection into the agent's network.
//! A socket table costs the kernel a walk of the host's whole connection hash (2–4 ms on a
//! 24 GiB host, more with many connections anywhere), so a family's table (IPv4, IPv6) is read
//! only when the namespace's count of its TCP sockets in use (`net/sockstat`, `sockstat6`,
//! microseconds) is not zero and has changed since the last read: a process that has not listened
//! yet costs next to nothing, and one that listens costs one walk, not two. A table is read no
//! further than its listeners (`read_listeners`): every read() after the kernel reached the end
//! of a table, that which finds the end included, walks the hash again from its start.

use crate::endpoint::AgentEndpoint;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Reads the sockets of held containers (`desired::is_held`) and records what it finds.
#[derive(Debug)]
pub struct Probe {
    proc_root: PathBuf,
    warmup: f64,
    warned: AtomicBool,
    /// container id → its TCP sockets in use when its tables were last read
    read_at: Mutex<HashMap<String, InUse>>,
}

impl Probe {
    /// Reading the Docker host's procfs at `proc_root` (`HOST_PROC`); `warmup` is
    /// `ROUTE_WARMUP_SECS`, after which a container is routed whatever it listens on.
    pub fn new(proc_root: PathBuf, warmup: Duration) -> Probe {
        Probe {
            proc_root,
            warmup: warmup.as_secs_f64(),
            warned: AtomicBool::new(false),
            read_at: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `a` is held at unix time `now`: seen not listening, its warm-up not over.
    pub fn holds(&self, a: &AgentEndpoint, now: f64) -> bool {
        crate::desired::is_held(a, now, self.warmup)
    }

    /// If `a` is held, whether it listens now: `listening` becomes `Some(true)` when it does, and
    /// `None` when `HOST_PROC` does not show the container's process (then it is routed at once;
    /// said once in the log). A failed read leaves it held. Returns whether `a` changed.
    pub fn hear(&self, a: &mut AgentEndpoint, now: f64) -> bool {
        match self.heard(a, now) {
            Some(listening) => {
                a.listening = listening;
                true
            }
            None => false,
        }
    }

    /// What [`Probe::hear`] would set `a.listening` to, when it changes it.
    pub fn heard(&self, a: &AgentEndpoint, now: f64) -> Option<Option<bool>> {
        let pid = a.pid.filter(|_| self.holds(a, now))?;
        if self.proc_root.as_os_str().is_empty() {
            return Some(None); // not read (HOST_PROC empty): routed at once
        }
        let mut read_at = self.read_at.lock().unwrap_or_else(|e| e.into_inner());
        let last = read_at.get(&a.container_id).copied();
        let t = std::time::Instant::now();
        match listens(&self.proc_root, &a.container_id, pid, &a.ip, a.port, last) {
            Ok((false, in_use)) => {
                read_at.insert(a.container_id.clone(), in_use);
                None
            }
            Ok((true, _)) => {
                read_at.remove(&a.container_id);
                let since = a.started_unix().map_or(0.0, |s| (now - s) * 1000.0);
                let read = t.elapsed().as_secs_f64() * 1000.0;
                tracing::debug!(container = %a.container_name, port = a.port, "listening {since:.0} ms after its start (its sockets read in {read:.1} ms): routable");
                Some(Some(true))
            }
            Err(Unreadable::Io(e)) => {
                tracing::debug!(container = %a.container_name, "its sockets cannot be read now ({e}); held until it listens or its warm-up ends");
                None
            }
            Err(e) => {
                read_at.remove(&a.container_id);
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(container = %a.container_name, "cannot tell whether agent containers listen on their ports: {e}; a new container is routed at once, and takes the traffic from another of its agent ROUTE_WARMUP_SECS after its start");
                }
                Some(None)
            }
        }
    }

    /// Forgets the containers not in `held` (gone, or decided).
    pub fn keep_only<'a>(&self, held: impl Iterator<Item = &'a str>) {
        let held: std::collections::BTreeSet<&str> = held.collect();
        let mut read_at = self.read_at.lock().unwrap_or_else(|e| e.into_inner());
        read_at.retain(|id, _| held.contains(id.as_str()));
    }
}

/// A network namespace's TCP sockets in use (listening or connected), IPv4 and IPv6.
pub type InUse = (u64, u64);

/// The kernel's `TCP_LISTEN` in the `st` column.
const LISTEN: &str = "0A";

/// Why a container's sockets cannot be read; the sidecar then waits `ROUTE_WARMUP_SECS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// `/proc/{pid}` is not the container's process (another pid namespace, or the pid ended).
    NotTheContainer {
        pid: u32,
        proc_root: PathBuf,
    },
    Io(String),
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::NotTheContainer { pid, proc_root } => write!(
                f,
                "{}/{pid} is not the container's process: mount the Docker host's /proc and point HOST_PROC at it (compose: '/proc:/host/proc:ro' and HOST_PROC=/host/proc)",
                proc_root.display()
            ),
            Unreadable::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Whether container `container_id`, whose main process is `pid` (the engine's `State.Pid`),
/// listens on `port` at `ip` or at every address, and its namespace's TCP sockets in use. A
/// family's table is read only when its count is not zero and not `last`'s (the counts when the
/// tables were last read); IPv6 first, since Docker's resolver holds an IPv4 listener in every
/// container on a user-defined network, so IPv6 sockets in use are the agent's own. The pid is
/// checked to be the container's on the first look and before the tables are read.
pub fn listens(
    proc_root: &Path,
    container_id: &str,
    pid: u32,
    ip: &str,
    port: u16,
    last: Option<InUse>,
) -> Result<(bool, InUse), Unreadable> {
    let dir = proc_root.join(pid.to_string());
    let is_the_containers = || {
        let cgroup = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
        if container_id.len() < 12 || !cgroup.contains(container_id) {
            return Err(Unreadable::NotTheContainer {
                pid,
                proc_root: proc_root.to_path_buf(),
            });
        }
        Ok(())
    };
    if last.is_none() {
        is_the_containers()?;
    }
    let in_use = (
        in_use(&dir.join("net/sockstat"), "TCP:")?,
        in_use(&dir.join("net/sockstat6"), "TCP6:")?,
    );
    if in_use == (0, 0) || Some(in_use) == last {
        return Ok((false, in_use));
    }
    is_the_containers()?;
    let ip: Option<IpAddr> = ip.parse().ok();
    let tables = [
        ("net/tcp6", in_use.1, last.map(|l| l.1)),
        ("net/tcp", in_use.0, last.map(|l| l.0)),
    ];
    for (table, count, was) in tables {
        if count == 0 || Some(count) == was {
            continue;
        }
        let path = dir.join(table);
        let f = std::fs::File::open(&path)
            .map_err(|e| Unreadable::Io(format!("{}: {e}", path.display())))?;
        if listening_in(read_listeners(f, count), ip, port) {
            return Ok((true, in_use));
        }
    }
    Ok((false, in_use))
}

/// The `inuse` count on the line of `proto` in a `sockstat` file; 0 without the file (no IPv6).
fn in_use(path: &Path, proto: &str) -> Result<u64, Unreadable> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Unreadable::Io(format!("{}: {e}", path.display()))),
    };
    let line = text
        .lines()
        .find(|l| l.starts_with(proto))
        .unwrap_or_default();
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "inuse" {
            return Ok(words.next().and_then(|n| n.parse().ok()).unwrap_or(0));
        }
    }
    Ok(0)
}

/// The most lines of a socket table read: a package that opens sockets by the hundred thousand
/// costs the sidecar no more than this each time, and waits its warm-up.
const MAX_SOCKETS: u64 = 20_000;

/// The heading and the first `in_use` lines of socket table `f`, with no read() past them: the
/// kernel lists its listening sockets before any other, and each is one of the namespace's
/// sockets in use, so these hold every listener; and a read() after the kernel has found the end
/// of its table walks the host's connection hash again (one more read in a table without the
/// agent's listener was one more walk). A read takes up to 64 KiB, more than the kernel gives at
/// once (a page of whole lines).
fn read_listeners(f: std::fs::File, in_use: u64) -> impl Iterator<Item = String> {
    let lines = BufReader::with_capacity(64 * 1024, f).lines();
    lines
        .map_while(Result::ok)
        .take(1 + in_use.min(MAX_SOCKETS) as usize)
}

/// Whether the lines of a `/proc/net/tcp` or `tcp6` table (its heading first) have a listening
/// socket on `port` at an address that takes connections for `ip`: every address, or `ip`
/// itself (never loopback alone). The kernel lists its listeners first: the lines after the
/// first that does not listen are not looked at.
pub fn listening_in<S: AsRef<str>>(
    mut table: impl Iterator<Item = S>,
    ip: Option<IpAddr>,
    port: u16,
) -> bool {
    table.next();
    for line in table {
        let line = line.as_ref();
        let mut cols = line.split_whitespace();
        let (Some(_slot), Some(local), Some(_remote), Some(state)) =
            (cols.next(), cols.next(), cols.next(), cols.next())
        else {
            continue;
        };
        if state != LISTEN {
            return false;
        }
        let Some((addr, p)) = local.split_once(':') else {
            continue;
        };
        if u16::from_str_radix(p, 16).ok() != Some(port) {
            continue;
        }
        let reachable = match address(addr) {
            Some(a) if a.is_unspecified() => true,
            Some(a) => Some(a) == ip && !a.is_loopback(),
            None => false,
        };
        if reachable {
            return true;
        }
    }
    false
}

/// An address as the kernel prints it: 32-bit words in the host's byte order, in hex; an
/// IPv4-mapped IPv6 address is read as its IPv4 address.
fn address(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = hex.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(w, 16).ok()?.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(b);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn own_table(v6: bool) -> String {
        let t = if v6 { "tcp6" } else { "tcp" };
        std::fs::read_to_string(format!("/proc/self/net/{t}")).unwrap()
    }

    /// The kernel's own tables, with sockets of this process: a listener on every address is
    /// found at any ip; one on loopback never is; a connected socket's port is no listener.
    #[test]
    fn the_kernels_tables_are_read_as_it_writes_them() {
        let any = TcpListener::bind("0.0.0.0:0").unwrap();
        let lo = TcpListener::bind("127.0.0.1:0").unwrap();
        let any_port = any.local_addr().unwrap().port();
        let lo_port = lo.local_addr().unwrap().port();
        let client = std::net::TcpStream::connect(("127.0.0.1", lo_port)).unwrap();
        let client_port = client.local_addr().unwrap().port();
        let table = own_table(false);
        let ip = Some("10.213.0.2".parse().unwrap());
        assert!(listening_in(table.lines(), ip, any_port), "{table}");
        assert!(listening_in(table.lines(), None, any_port));
        assert!(
            !listening_in(table.lines(), ip, lo_port),
            "loopback only: {table}"
        );
        assert!(
            !listening_in(table.lines(), Some("127.0.0.1".parse().unwrap()), lo_port),
            "loopback is never reachable from the gateway"
        );
        assert!(
            !listening_in(table.lines(), ip, client_port),
            "not listening"
        );
        drop(any);
        assert!(
            !listening_in(own_table(false).lines(), ip, any_port),
            "closed"
        );
    }

    #[test]
    fn ipv6_listeners_and_mapped_addresses_are_read() {
        let Ok(any6) = TcpListener::bind("[::]:0") else {
            return; // no IPv6 on this host
        };
        let port = any6.local_addr().unwrap().port();
        let ip = Some("10.213.0.2".parse().unwrap());
        assert!(listening_in(own_table(true).lines(), ip, port));
        if let Ok(lo6) = TcpListener::bind("[::1]:0") {
            let p = lo6.local_addr().unwrap().port();
            assert!(!listening_in(own_table(true).lines(), ip, p));
        }
        // hand-written lines for the forms a host here may not have
        let head = "  sl  local_address                         remote_address                        st\n";
        let mapped = format!(
            "{head}   0: 0000000000000000FFFF0000{}:1388 00000000000000000000000000000000:0000 0A\n",
            hex_word([10, 213, 0, 2])
        );
        assert!(listening_in(mapped.lines(), ip, 5000));
        assert!(!listening_in(
            mapped.lines(),
            Some("10.213.0.3".parse().unwrap()),
            5000
        ));
    }

    fn hex_word(b: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(b))
    }

    #[test]
    fn a_pid_that_is_not_the_containers_is_never_read() {
        // this process, read as a container's whose id it does not hold
        let look = |root: &str| {
            let id = "a".repeat(64);
            listens(
                Path::new(root),
                &id,
                std::process::id(),
                "10.0.0.1",
                5000,
                None,
            )
        };
        let e = look("/proc").unwrap_err();
        assert!(matches!(e, Unreadable::NotTheContainer { .. }), "{e}");
        assert!(e.to_string().contains("HOST_PROC"), "{e}");
        assert!(look("/nonexistent").is_err());
    }

    #[test]
    fn without_host_proc_a_container_is_routed_at_once() {
        let now = 1_800_000_000.0;
        let mut a = AgentEndpoint::labelled("a", &"c".repeat(64), "10.0.0.2", "n");
        a.pid = Some(std::process::id());
        a.listening = Some(false);
        a.started_at = "2027-01-15T08:00:00Z".into();
        let probe = Probe::new(PathBuf::new(), Duration::from_secs(3));
        let soon = a.started_unix().unwrap() + 1.0;
        assert!(probe.holds(&a, soon));
        assert!(probe.hear(&mut a, soon));
        assert_eq!(a.listening, None);
        assert!(!probe.holds(&a, now));
    }

    #[test]
    fn the_sockets_in_use_are_read_from_sockstat() {
        let dir = std::env::temp_dir().join(format!("sockstat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("sockstat");
        std::fs::write(
            &f,
            "sockets: used 9\nTCP: inuse 2 orphan 0 tw 1 alloc 4 mem 0\nUDP: inuse 1 mem 0\n",
        )
        .unwrap();
        assert_eq!(in_use(&f, "TCP:").unwrap(), 2);
        assert_eq!(in_use(&f, "TCP6:").unwrap(), 0, "no such line");
        assert_eq!(
            in_use(&dir.join("sockstat6"), "TCP6:").unwrap(),
            0,
            "no IPv6"
        );
        let _ = std::fs::remove_dir_all(&dir);
        // the kernel's own: this process listening is in use
        let _l = TcpListener::bind("0.0.0.0:0").unwrap();
        assert!(in_use(Path::new("/proc/self/net/sockstat"), "TCP:").unwrap() >= 1);
    }

    /// A procfs of one process at `root`: its cgroup names `id`, its sockets in use are `in_use`,
    /// and each table given is a file (the others are missing: a read of one fails).
    fn fake_proc(root: &Path, id: &str, in_use: InUse, tcp: Option<&str>, tcp6: Option<&str>) {
        let net = root.join("7/net");
        let _ = std::fs::remove_dir_all(root);
        std::fs::create_dir_all(&net).unwrap();
        std::fs::write(root.join("7/cgroup"), format!("0::/docker/{id}\n")).unwrap();
        let (v4, v6) = in_use;
        std::fs::write(net.join("sockstat"), format!("TCP: inuse {v4} orphan 0\n")).unwrap();
        std::fs::write(net.join("sockstat6"), format!("TCP6: inuse {v6}\n")).unwrap();
        for (name, table) in [("tcp", tcp), ("tcp6", tcp6)] {
            if let Some(t) = table {
                std::fs::write(net.join(name), t).unwrap();
            }
        }
    }

    #[test]
    fn a_familys_table_is_read_only_when_its_count_changed() {
        let root = std::env::temp_dir().join(format!("fake-proc-{}", std::process::id()));
        let id = "c".repeat(64);
        let look = |last| listens(&root, &id, 7, "10.0.0.2", 5000, last);
        let v6_listener = "h\n 0: 00000000000000000000000000000000:1388 0:0 0A\n";
        let resolver = "h\n 0: 0B00007F:B58B 00000000:0000 0A\n";
        // the resolver alone (IPv4): its table is read on the first look, not again
        fake_proc(&root, &id, (1, 0), Some(resolver), None);
        assert_eq!(look(None), Ok((false, (1, 0))));
        fake_proc(&root, &id, (1, 0), None, None);
        assert_eq!(look(Some((1, 0))), Ok((false, (1, 0))), "nothing read");
        // the agent listens on IPv6: only that table is read, though IPv4's cannot be
        fake_proc(&root, &id, (1, 1), None, Some(v6_listener));
        assert_eq!(look(Some((1, 0))), Ok((true, (1, 1))));
        // on a first look too, IPv6 first: found there, IPv4's is not read
        assert_eq!(look(None), Ok((true, (1, 1))));
        // an IPv4 count that changed is read (here it cannot be: the failure shows the read)
        assert!(matches!(look(Some((0, 1))), Err(Unreadable::Io(_))));
        let _ = std::fs::remove_dir_all(&root);
    }

    /// The kernel's order, which reading stops on: its listeners before any other socket, here
    /// with a listener opened after a connection.
    #[test]
    fn the_kernel_lists_its_listeners_first() {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(first.local_addr().unwrap()).unwrap();
        let (_served, _) = first.accept().unwrap();
        let later = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = |s: std::net::SocketAddr| format!(":{:04X} ", s.port());
        let table = own_table(false);
        let records: Vec<&str> = table.lines().skip(1).collect();
        let at = |needle: String, state: &str| {
            records
                .iter()
                .position(|l| {
                    let local = l.split_whitespace().nth(1).unwrap_or_default();
                    format!("{local} ").ends_with(&needle)
                        && l.split_whitespace().nth(3) == Some(state)
                })
                .unwrap_or_else(|| panic!("{needle} {state} in {table}"))
        };
        let connected = at(port(client.local_addr().unwrap()), "01");
        assert!(
            at(port(later.local_addr().unwrap()), LISTEN) < connected,
            "{table}"
        );
        let last_listener = records
            .iter()
            .rposition(|l| l.split_whitespace().nth(3) == Some(LISTEN));
        let first_other = records
            .iter()
            .position(|l| l.split_whitespace().nth(3) != Some(LISTEN));
        assert!(last_listener < first_other, "{table}");
    }

    /// A table that is a pipe whose writer stays open: a read() past the lines given would
    /// block. `listens` must answer from the heading and the lines it needs.
    #[test]
    fn a_table_is_read_no_further_than_its_listeners() {
        let root = std::env::temp_dir().join(format!("fifo-proc-{}", std::process::id()));
        let id = "d".repeat(64);
        let resolver = " 0: 0B00007F:B58B 00000000:0000 0A\n";
        let connected = " 1: 0200A8C0:9C40 0100A8C0:01BB 01\n";
        // the resolver alone among 1 socket in use; one listener, then a connection, among 9
        for (in_use, lines) in [(1, vec![resolver]), (9, vec![resolver, connected])] {
            fake_proc(&root, &id, (in_use, 0), None, None);
            let path = root.join("7/net/tcp");
            let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
            // SAFETY: mkfifo on a path this test owns, no memory handed over.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            let text = format!("h\n{}", lines.concat());
            let writer = std::thread::spawn(move || {
                use std::io::Write;
                let mut w = std::fs::OpenOptions::new().write(true).open(path).unwrap();
                w.write_all(text.as_bytes()).unwrap();
                std::thread::sleep(Duration::from_secs(10)); // no end of file meanwhile
            });
            let (tx, rx) = std::sync::mpsc::channel();
            let (r, i) = (root.clone(), id.clone());
            std::thread::spawn(move || {
                let _ = tx.send(listens(&r, &i, 7, "10.0.0.2", 5000, None));
            });
            let answer = rx.recv_timeout(Duration::from_secs(5));
            assert_eq!(answer, Ok(Ok((false, (in_use, 0)))), "{lines:?}");
            drop(writer); // (detached: it ends on its own)
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn malformed_lines_are_no_listener() {
        for t in [
            "",
            "header\n",
            "h\n 0: zz:1388 0:0 0A\n",
            "h\n 0: 00000000 0:0 0A\n",
            "h\n 0: 00000000:1388\n",
            "h\n 0: 0000:1388 0:0 0A\n",
        ] {
            assert!(!listening_in(t.lines(), None, 5000), "{t:?}");
        }
        assert!(listening_in(
            "h\n 0: 00000000:1388 0:0 0A\n".lines(),
            None,
            5000
        ));
    }
}
