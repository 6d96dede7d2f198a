//! The compose model of an uploaded package: the strict YAML of `yaml` typed one key at a time
//! (one type per key), with `${…}` resolved from the explicit variables of `interpolate` and every
//! path made absolute. Only the keys of the README's table exist here: anything else is refused
//! with one line naming the key, the service and what to do instead. What is in the model is what
//! will run (`render` writes it for compose); the checks on it are `policy`'s. Pure.

use super::interpolate::{resolve, Vars};
use super::refusal::Refusal;
use super::yaml::{Kind, Node};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Package {
    pub services: Vec<Service>,
    pub networks: Vec<NetworkDef>,
    /// Named volumes the package declares (plain local volumes of its project).
    pub volumes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetworkDef {
    pub key: String,
    /// Declared external: the agents network (`shared`), or a network the package expects to
    /// exist, which becomes a network of its own project.
    pub external: bool,
    /// Names the shared agents network (`agents-net`, `nasiko-network` or the configured one).
    pub shared: bool,
    pub internal: bool,
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Build {
    /// Absolute, inside the package.
    pub context: PathBuf,
    /// Absolute, inside the package.
    pub dockerfile: PathBuf,
    pub args: Vec<(String, String)>,
    pub target: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mount {
    /// A host path (absolute, lexically inside the package); always mounted read-only.
    Bind {
        source: PathBuf,
        target: String,
    },
    /// A named volume the package declares, or an anonymous one (`source` None).
    Volume {
        source: Option<String>,
        target: String,
        read_only: bool,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Healthcheck {
    pub test: Option<Vec<String>>,
    /// Milliseconds.
    pub interval: Option<u64>,
    pub timeout: Option<u64>,
    pub start_period: Option<u64>,
    pub retries: Option<u64>,
    pub disable: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Service {
    pub key: String,
    pub build: Option<Build>,
    pub image: Option<String>,
    /// A string (shell form) or a list; `Some(vec![])` is an explicit empty list.
    pub command: Option<Cmd>,
    pub entrypoint: Option<Cmd>,
    /// From `env_file` (read here) and then `environment`, in order; later wins.
    pub environment: Vec<(String, String)>,
    /// Container ports ("5000", "5000-5001", "9000/udp") from `ports` and `expose`.
    pub ports: Vec<String>,
    pub expose: Vec<String>,
    pub volumes: Vec<Mount>,
    pub tmpfs: Vec<String>,
    /// Network keys with their aliases, in order; empty: the project's default network.
    pub networks: Vec<(String, Vec<String>)>,
    /// Service keys with their condition.
    pub depends_on: Vec<(String, String)>,
    pub healthcheck: Option<Healthcheck>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub restart: Option<String>,
    pub stop_signal: Option<String>,
    pub stop_grace_period: Option<u64>,
    pub labels: Vec<(String, String)>,
    pub container_name: Option<String>,
    pub stdin_open: Option<bool>,
    pub tty: Option<bool>,
    pub read_only: Option<bool>,
    pub init: Option<bool>,
    pub cap_drop: Vec<String>,
    /// Bytes.
    pub mem_limit: Option<u64>,
    pub mem_reservation: Option<u64>,
    pub cpus: Option<f64>,
    pub cpu_shares: Option<u64>,
    pub pids_limit: Option<u64>,
    /// `deploy.replicas` or `scale`: how many containers of it run (the agent's service only;
    /// the policy checks the operator's cap).
    pub replicas: Option<u64>,
}

impl Package {
    /// A package with a Dockerfile and no compose file: one service, the agent, on port 5000.
    pub fn dockerfile_only(dir: &Path, agent: &str) -> Package {
        Package {
            services: vec![Service {
                key: agent.to_string(),
                build: Some(Build::default_in(dir)),
                expose: vec!["5000".into()],
                ..Default::default()
            }],
            ..Default::default()
        }
    }
}

impl Build {
    /// The package's root and its `Dockerfile`.
    pub fn default_in(dir: &Path) -> Build {
        Build {
            context: dir.to_path_buf(),
            dockerfile: dir.join("Dockerfile"),
            args: vec![],
            target: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cmd {
    Shell(String),
    Exec(Vec<String>),
}

/// What the model is read against.
pub struct Context<'a> {
    /// The package's folder (absolute).
    pub dir: &'a Path,
    pub vars: &'a Vars,
    /// The agents network's configured name (`DOCKER_NETWORK`).
    pub agents_network: &'a str,
    /// Bytes of text the model holds so far (values after `${…}`, env files read): bounded by
    /// [`MAX_TEXT`], so no small file expands into gigabytes.
    pub text: std::cell::Cell<usize>,
}

/// The most text a package's model may hold: values after interpolation and env files.
pub const MAX_TEXT: usize = 2 << 20;
/// The most ports one service may list under `ports` (each may become a host port).
const MAX_PORTS: usize = 16;
/// The most env files one service may name.
const MAX_ENV_FILES: usize = 16;

impl<'a> Context<'a> {
    pub fn new(dir: &'a Path, vars: &'a Vars, agents_network: &'a str) -> Self {
        Context {
            dir,
            vars,
            agents_network,
            text: std::cell::Cell::new(0),
        }
    }

    /// Count `n` more bytes of text; refused past [`MAX_TEXT`].
    fn spend(&self, n: usize) -> Result<(), Refusal> {
        let total = self.text.get() + n;
        self.text.set(total);
        if total > MAX_TEXT {
            return err(format!(
                "the package's settings come to more than {} MiB of text (after ${{…}} and env files); an agent's settings are a few KiB",
                MAX_TEXT >> 20
            ));
        }
        Ok(())
    }
}

/// The names a package may use for the shared agents network.
pub const LEGACY_NETWORK: &str = nasiko_contract::LEGACY_AGENTS_NETWORK;
pub const SHARED_NETWORK: &str = nasiko_contract::AGENTS_NETWORK;

impl Context<'_> {
    pub fn is_shared(&self, name: &str) -> bool {
        [LEGACY_NETWORK, SHARED_NETWORK, self.agents_network].contains(&name)
    }
}

const TOP_KEYS: &[&str] = &["services", "networks", "volumes", "name", "version"];

/// What to do instead, for the keys people reach for.
fn instead(key: &str) -> &'static str {
    match key {
        "privileged" | "cap_add" | "devices" | "security_opt" | "userns_mode" | "cgroup"
        | "cgroup_parent" | "oom_kill_disable" | "oom_score_adj" | "sysctls" | "ulimits"
        | "device_cgroup_rules" | "runtime" | "isolation" | "storage_opt" | "shm_size" => {
            "agents run unprivileged with the operator's limits; remove it"
        }
        "pid" | "ipc" | "uts" | "network_mode" | "extra_hosts" | "dns" | "dns_search"
        | "dns_opt" | "links" | "external_links" | "hostname" | "domainname" | "mac_address" => {
            "agents live on the agents network and reach the platform through the gateway; remove it"
        }
        "volumes_from" => "mount a named volume of the package's own instead",
        "secrets" | "configs" => "put the values in the package's .env file instead",
        "logging" => "logs go to `docker logs` and the build agent; remove it",
        "extends" | "include" => "put everything in the one docker-compose.yml of the package",
        "platform" | "pull_policy" | "profiles" => "remove it; the build agent builds and runs the agent",
        _ => "remove it (see the README's table of what an agent may ask for)",
    }
}

fn err<T>(msg: String) -> Result<T, Refusal> {
    Err(Refusal(msg))
}

/// Reads one service (or the top level: `svc` empty) with the context for messages.
struct At<'a, 'c> {
    cx: &'a Context<'c>,
    svc: &'a str,
}

impl At<'_, '_> {
    fn whose(&self, key: &str) -> String {
        if self.svc.is_empty() {
            format!("'{key}'")
        } else {
            format!("service '{}': '{key}'", self.svc)
        }
    }

    fn wrong(&self, key: &str, n: &Node, want: &str) -> Refusal {
        Refusal(format!(
            "{} (line {}) is {}, but must be {want}",
            self.whose(key),
            n.line,
            n.describe()
        ))
    }

    /// A scalar's text with `${…}` resolved.
    fn text(&self, key: &str, n: &Node) -> Result<String, Refusal> {
        let t = n.as_text().ok_or_else(|| self.wrong(key, n, "a string"))?;
        let out = resolve(t, self.cx.vars, MAX_TEXT)
            .map_err(|e| Refusal(format!("{} (line {}): {e}", self.whose(key), n.line)))?;
        self.cx.spend(out.len())?;
        Ok(out)
    }

    fn boolean(&self, key: &str, n: &Node) -> Result<bool, Refusal> {
        n.as_bool()
            .ok_or_else(|| self.wrong(key, n, "true or false (unquoted)"))
    }

    fn list(&self, key: &str, n: &Node) -> Result<Vec<String>, Refusal> {
        let items = n.as_seq().ok_or_else(|| self.wrong(key, n, "a list"))?;
        items.iter().map(|i| self.text(key, i)).collect()
    }

    fn str_or_list(&self, key: &str, n: &Node) -> Result<Vec<String>, Refusal> {
        match &n.kind {
            Kind::Scalar { .. } => Ok(vec![self.text(key, n)?]),
            Kind::Seq(_) => self.list(key, n),
            _ => Err(self.wrong(key, n, "a string or a list")),
        }
    }

    fn map<'n>(&self, key: &str, n: &'n Node) -> Result<&'n [(String, Node)], Refusal> {
        match &n.kind {
            Kind::Map(m) => Ok(m),
            Kind::Null => Ok(&[]),
            _ => Err(self.wrong(key, n, "a mapping")),
        }
    }

    /// A mapping whose keys must be among `allowed`.
    fn fields<'n>(
        &self,
        key: &str,
        n: &'n Node,
        allowed: &[&str],
    ) -> Result<&'n [(String, Node)], Refusal> {
        let m = self.map(key, n)?;
        if let Some((k, _)) = m.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            return err(format!(
                "{} is not allowed for agents; use only {} (remove '{k}')",
                self.whose(&format!("{key}.{k}")),
                allowed.join(", ")
            ));
        }
        Ok(m)
    }

    /// `KEY: value` mapping or `KEY=value` list; a key without a value is None.
    fn pairs(&self, key: &str, n: &Node) -> Result<Vec<(String, Option<String>)>, Refusal> {
        let out: Vec<(String, Option<String>)> = match &n.kind {
            Kind::Null => vec![],
            Kind::Map(m) => m
                .iter()
                .map(|(k, v)| match &v.kind {
                    Kind::Null => Ok((k.clone(), None)),
                    Kind::Scalar { .. } => Ok((k.clone(), Some(self.text(key, v)?))),
                    _ => Err(self.wrong(key, v, "a string")),
                })
                .collect::<Result<_, _>>()?,
            Kind::Seq(_) => self
                .list(key, n)?
                .into_iter()
                .map(|l| match l.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (l, None),
                })
                .collect(),
            _ => return Err(self.wrong(key, n, "a mapping or a list of KEY=VALUE")),
        };
        for (k, _) in &out {
            if k.is_empty() || k.contains('$') || k.chars().any(char::is_whitespace) {
                return err(format!(
                    "{}: the name '{k}' is empty or has '$' or spaces; write names literally",
                    self.whose(key)
                ));
            }
        }
        Ok(out)
    }

    fn number(&self, key: &str, n: &Node) -> Result<f64, Refusal> {
        let t = self.text(key, n)?;
        t.trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .ok_or_else(|| self.wrong(key, n, "a number"))
    }

    fn count(&self, key: &str, n: &Node) -> Result<u64, Refusal> {
        let t = self.text(key, n)?;
        t.trim()
            .parse::<u64>()
            .map_err(|_| self.wrong(key, n, "a whole number, 0 or more"))
    }

    fn bytes(&self, key: &str, n: &Node) -> Result<u64, Refusal> {
        let t = self.text(key, n)?;
        parse_bytes(&t).ok_or_else(|| self.wrong(key, n, "a size such as 512m or 1g"))
    }

    fn duration(&self, key: &str, n: &Node) -> Result<u64, Refusal> {
        let t = self.text(key, n)?;
        parse_duration_ms(&t).ok_or_else(|| self.wrong(key, n, "a duration such as 10s or 1m30s"))
    }

    /// A path of the package: resolved against `base`, lexically inside the package.
    fn path(&self, key: &str, p: &str, base: &Path) -> Result<PathBuf, Refusal> {
        if p.starts_with('~') || p.is_empty() {
            return err(format!(
                "{}: the path '{p}' is outside the package; use a path inside the package",
                self.whose(key)
            ));
        }
        let abs = normalize(base, Path::new(p));
        if !abs.starts_with(self.cx.dir) {
            let what = if p.contains("docker.sock") {
                "is the Docker socket; agents may not control the Docker engine"
            } else {
                "is outside the package; use a path inside the package"
            };
            return err(format!("{}: the path '{p}' {what}", self.whose(key)));
        }
        Ok(abs)
    }
}

/// Lexically normalize `p` against `base` (no filesystem access: the package has no symlinks).
pub fn normalize(base: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// `512m`, `1g`, `1gb`, `1024` (bytes), as compose reads sizes.
pub fn parse_bytes(t: &str) -> Option<u64> {
    let t = t.trim().to_ascii_lowercase();
    let digits = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    let v = n * mult as f64;
    (v.is_finite() && v < 1e18).then_some(v as u64)
}

/// Go's duration syntax (`1m30s`, `500ms`, `2h`), in milliseconds.
pub fn parse_duration_ms(t: &str) -> Option<u64> {
    let mut rest = t.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let (num, tail) = rest.split_at(n);
        let value: f64 = num.parse().ok()?;
        let u = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(u);
        let ms = match unit {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            "h" => 3600e3,
            _ => return None,
        };
        total += value * ms;
        rest = next;
    }
    (total < 1e15).then_some(total as u64)
}

/// A name compose and Docker accept for a service, network or volume key.
fn valid_key(k: &str) -> bool {
    let mut c = k.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphanumeric())
        && c.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && k.len() <= 63
}

/// A container port: `5000`, `5000-5001`, with `/tcp`, `/udp` or `/sctp`.
fn valid_port(p: &str) -> bool {
    let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
    let one = |s: &str| s.parse::<u16>().is_ok_and(|n| n > 0);
    let nums = match num.split_once('-') {
        Some((a, b)) => one(a) && one(b),
        None => one(num),
    };
    nums && ["tcp", "udp", "sctp"].contains(&proto)
}

/// The container side of a `ports:` entry ("5000", "8085:5000", "127.0.0.1:9000:9000/udp").
fn container_port(at: &At, n: &Node) -> Result<String, Refusal> {
    let port = match &n.kind {
        Kind::Scalar { .. } => {
            let spec = at.text("ports", n)?;
            let (addr, proto) = match spec.rsplit_once('/') {
                Some((a, p)) => (a.to_string(), Some(p.to_string())),
                None => (spec.clone(), None),
            };
            let port = addr.rsplit(':').next().unwrap_or("").trim().to_string();
            match proto {
                Some(p) if p != "tcp" => format!("{port}/{p}"),
                _ => port,
            }
        }
        Kind::Map(_) => {
            let m = at.fields(
                "ports",
                n,
                &[
                    "target",
                    "published",
                    "protocol",
                    "host_ip",
                    "mode",
                    "name",
                    "app_protocol",
                ],
            )?;
            let get = |k: &str| m.iter().find(|(x, _)| x == k).map(|(_, v)| v);
            let target =
                get("target").ok_or_else(|| at.wrong("ports", n, "a mapping with a target"))?;
            let target = at.text("ports", target)?;
            match get("protocol").map(|p| at.text("ports", p)).transpose()? {
                Some(p) if p != "tcp" => format!("{target}/{p}"),
                _ => target,
            }
        }
        _ => return Err(at.wrong("ports", n, "a port or a mapping")),
    };
    if !valid_port(&port) {
        return err(format!(
            "{} (line {}): cannot read the container port '{port}'; write e.g. \"5000\"",
            at.whose("ports"),
            n.line
        ));
    }
    Ok(port)
}

/// Parse a package's `.env` or env_file: `KEY=VALUE` lines, `#` comments, optional quotes,
/// `export ` prefix. Values are literal (a `$` stays a `$`).
pub fn parse_dotenv(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            &v[1..v.len() - 1]
        } else {
            v.split(" #").next().unwrap_or(v).trim_end()
        };
        out.push((k.to_string(), v.to_string()));
    }
    out
}

/// Read the package's compose file (already read as strict YAML) into the model.
pub fn read(root: &Node, cx: &Context) -> Result<Package, Refusal> {
    let top = At { cx, svc: "" };
    let m = match &root.kind {
        Kind::Map(m) => m,
        _ => return err("the compose file is not a mapping of services".into()),
    };
    for (k, _) in m {
        if !TOP_KEYS.contains(&k.as_str()) && !k.starts_with("x-") {
            return err(format!(
                "the compose file's top-level '{k}' is not allowed for agents: {}",
                instead(k)
            ));
        }
    }
    let mut pkg = Package::default();
    if let Some(n) = root.get("volumes") {
        for (k, def) in top.map("volumes", n)? {
            if !valid_key(k) {
                return err(format!(
                    "the volume name '{k}' is not a plain name (letters, digits, '_', '.', '-')"
                ));
            }
            let vol = At { cx, svc: "" };
            for (opt, _) in vol.map("volumes", def)? {
                if opt != "labels" {
                    return err(format!(
                        "volume '{k}' sets '{opt}'; an agent's volumes are plain local volumes of its own, named by the build agent (remove '{opt}')"
                    ));
                }
            }
            pkg.volumes.push(k.clone());
        }
    }
    if let Some(n) = root.get("networks") {
        for (k, def) in top.map("networks", n)? {
            pkg.networks.push(network_def(cx, k, def)?);
        }
    }
    let services = root
        .get("services")
        .ok_or_else(|| Refusal("the compose file has no 'services' mapping".into()))?;
    for (k, svc) in top.map("services", services)? {
        if !valid_key(k) {
            return err(format!(
                "the service name '{k}' is not a plain name (letters, digits, '_', '.', '-', at most 63)"
            ));
        }
        pkg.services.push(service(cx, k, svc)?);
    }
    if pkg.services.is_empty() {
        return err("the compose file has no services".into());
    }
    Ok(pkg)
}

fn network_def(cx: &Context, key: &str, def: &Node) -> Result<NetworkDef, Refusal> {
    if !valid_key(key) {
        return err(format!(
            "the network name '{key}' is not a plain name (letters, digits, '_', '.', '-')"
        ));
    }
    let at = At { cx, svc: "" };
    let mut d = NetworkDef {
        key: key.into(),
        shared: cx.is_shared(key),
        ..Default::default()
    };
    let mut name = None;
    let what = format!("networks.{key}");
    for (k, v) in at.map(&what, def)? {
        match k.as_str() {
            "external" => match &v.kind {
                Kind::Map(_) => {
                    let m = at.fields(&format!("{what}.external"), v, &["name"])?;
                    d.external = true;
                    if let Some((_, n)) = m.first() {
                        name = Some(at.text(&what, n)?);
                    }
                }
                _ => d.external = at.boolean(&format!("{what}.external"), v)?,
            },
            "name" => name = Some(at.text(&what, v)?),
            "internal" => d.internal = at.boolean(&format!("{what}.internal"), v)?,
            "labels" => {
                d.labels = at
                    .pairs(&what, v)?
                    .into_iter()
                    .map(|(k, v)| (k, v.unwrap_or_default()))
                    .collect()
            }
            "driver" if at.text(&what, v)? == "bridge" => {}
            _ => {
                return err(format!(
                    "network '{key}' sets '{k}'; an agent's networks are plain bridge networks of its own (remove '{k}')"
                ))
            }
        }
    }
    if let Some(n) = name {
        if d.external && cx.is_shared(&n) {
            d.shared = true;
        } else {
            return err(format!(
                "network '{key}' names the Docker network '{n}'; an agent joins only the agents network (agents-net) and networks of its own, which the build agent names (remove 'name')"
            ));
        }
    }
    if d.shared && !d.external && def.get("external").is_some() {
        return err(format!(
            "network '{key}' is the agents network and must be external (external: true)"
        ));
    }
    Ok(d)
}

const SERVICE_KEYS: &[&str] = &[
    "build",
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "expose",
    "volumes",
    "tmpfs",
    "networks",
    "depends_on",
    "healthcheck",
    "working_dir",
    "user",
    "labels",
    "restart",
    "stdin_open",
    "tty",
    "read_only",
    "cap_drop",
    "init",
    "stop_signal",
    "stop_grace_period",
    "container_name",
    "mem_limit",
    "mem_reservation",
    "cpus",
    "cpu_shares",
    "pids_limit",
    "deploy",
    "scale",
];

fn service(cx: &Context, key: &str, n: &Node) -> Result<Service, Refusal> {
    let at = At { cx, svc: key };
    let m = match &n.kind {
        Kind::Map(m) => m,
        _ => return err(format!("service '{key}' is not a mapping")),
    };
    let mut s = Service {
        key: key.into(),
        ..Default::default()
    };
    // env_file first: `environment` wins over it, whatever the order in the file
    if let Some(v) = n.get("env_file") {
        for f in env_files(&at, v)? {
            s.environment.extend(f);
        }
    }
    for (k, v) in m {
        match k.as_str() {
            "build" => s.build = Some(build(&at, v)?),
            "image" => s.image = Some(at.text(k, v)?),
            "command" => s.command = cmd(&at, k, v)?,
            "entrypoint" => s.entrypoint = cmd(&at, k, v)?,
            "environment" => environment(&at, k, v, &mut s.environment)?,
            "env_file" => {}
            "ports" => s.ports = ports(&at, k, v)?,
            "expose" => s.expose = expose(&at, k, v)?,
            "volumes" => {
                for e in v.as_seq().ok_or_else(|| at.wrong(k, v, "a list"))? {
                    s.volumes.push(mount(&at, e)?);
                }
            }
            "tmpfs" => s.tmpfs = at.str_or_list(k, v)?,
            "networks" => s.networks = service_networks(&at, v)?,
            "depends_on" => s.depends_on = depends_on(&at, v)?,
            "healthcheck" => s.healthcheck = Some(healthcheck(&at, v)?),
            "working_dir" => s.working_dir = Some(at.text(k, v)?),
            "user" => s.user = Some(at.text(k, v)?),
            "restart" => s.restart = Some(restart(&at, k, v)?),
            "stop_signal" => s.stop_signal = Some(at.text(k, v)?),
            "stop_grace_period" => s.stop_grace_period = Some(at.duration(k, v)?),
            "labels" => {
                s.labels = at
                    .pairs(k, v)?
                    .into_iter()
                    .map(|(k, v)| (k, v.unwrap_or_default()))
                    .collect()
            }
            "container_name" => s.container_name = Some(at.text(k, v)?),
            "stdin_open" => s.stdin_open = Some(at.boolean(k, v)?),
            "tty" => s.tty = Some(at.boolean(k, v)?),
            "read_only" => s.read_only = Some(at.boolean(k, v)?),
            "init" => s.init = Some(at.boolean(k, v)?),
            "cap_drop" => s.cap_drop = at.list(k, v)?,
            "mem_limit" => s.mem_limit = Some(at.bytes(k, v)?),
            "mem_reservation" => s.mem_reservation = Some(at.bytes(k, v)?),
            "cpus" => s.cpus = Some(at.number(k, v)?),
            "cpu_shares" => s.cpu_shares = Some(at.count(k, v)?),
            "pids_limit" => s.pids_limit = Some(at.count(k, v)?),
            "deploy" | "scale" => {
                let n = if k == "scale" {
                    at.count(k, v)?
                } else {
                    let m = at.fields(k, v, &["replicas"])?;
                    match m.first() {
                        Some((_, r)) => at.count("deploy.replicas", r)?,
                        None => continue,
                    }
                };
                if s.replicas.is_some_and(|r| r != n) {
                    return err(format!(
                        "service '{key}' asks for two numbers of replicas (deploy.replicas and scale); keep one"
                    ));
                }
                s.replicas = Some(n);
            }
            _ if SERVICE_KEYS.contains(&k.as_str()) => unreachable!("every allowed key is read"),
            _ => {
                return err(format!(
                    "service '{key}' asks for '{k}', which an agent may not have: {}",
                    instead(k)
                ))
            }
        }
    }
    Ok(s)
}

/// `environment` (a map or a list of `NAME=value`) over what `env_file` gave: a name without a
/// value is taken from the variables (never the build agent's environment); unknown, it is not
/// set, as compose leaves it.
fn environment(at: &At, k: &str, v: &Node, env: &mut Vec<(String, String)>) -> Result<(), Refusal> {
    for (name, value) in at.pairs(k, v)? {
        let value = value.or_else(|| {
            at.cx
                .vars
                .0
                .iter()
                .rev()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        });
        if let Some(value) = value {
            env.retain(|(n, _)| *n != name);
            env.push((name, value));
        }
    }
    Ok(())
}

/// `ports`: the container ports the agent serves (what is published on the host is the build
/// agent's choice), one by one, at most [`MAX_PORTS`].
fn ports(at: &At, k: &str, v: &Node) -> Result<Vec<String>, Refusal> {
    let mut ports = Vec::new();
    for p in v.as_seq().ok_or_else(|| at.wrong(k, v, "a list"))? {
        let p = container_port(at, p)?;
        if p.contains('-') {
            return err(format!(
                "{}: '{p}' is a range; list the ports the agent serves one by one",
                at.whose(k)
            ));
        }
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    if ports.len() > MAX_PORTS {
        return err(format!(
            "{}: {} ports; an agent serves at most {MAX_PORTS}",
            at.whose(k),
            ports.len()
        ));
    }
    Ok(ports)
}

fn expose(at: &At, k: &str, v: &Node) -> Result<Vec<String>, Refusal> {
    let mut ports = Vec::new();
    for p in at.list(k, v)? {
        if !valid_port(&p) {
            return err(format!("{}: cannot read the port '{p}'", at.whose(k)));
        }
        ports.push(p);
    }
    Ok(ports)
}

fn restart(at: &At, k: &str, v: &Node) -> Result<String, Refusal> {
    let r = at.text(k, v)?;
    let ok = ["no", "always", "unless-stopped", "on-failure"].contains(&r.as_str())
        || r.strip_prefix("on-failure:")
            .is_some_and(|n| n.parse::<u32>().is_ok());
    if !ok {
        return err(format!(
            "{}: '{r}' is not no, always, unless-stopped or on-failure[:N]",
            at.whose(k)
        ));
    }
    Ok(r)
}

fn cmd(at: &At, key: &str, n: &Node) -> Result<Option<Cmd>, Refusal> {
    Ok(match &n.kind {
        Kind::Null => None,
        Kind::Scalar { .. } => Some(Cmd::Shell(at.text(key, n)?)),
        _ => Some(Cmd::Exec(at.list(key, n)?)),
    })
}

fn build(at: &At, n: &Node) -> Result<Build, Refusal> {
    let dir = at.cx.dir;
    let (context, dockerfile, args, target) = match &n.kind {
        Kind::Scalar { .. } => (at.text("build", n)?, None, vec![], None),
        Kind::Map(_) => {
            let m = at
                .fields("build", n, &["context", "dockerfile", "args", "target"])
                .map_err(|e| {
                    Refusal(format!(
                        "{e} — the others reach outside the package or the build sandbox"
                    ))
                })?;
            let get = |k: &str| m.iter().find(|(x, _)| x == k).map(|(_, v)| v);
            let text = |k: &str| get(k).map(|v| at.text("build", v)).transpose();
            let args: Vec<(String, String)> = match get("args") {
                Some(a) => at
                    .pairs("build.args", a)?
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k, v)))
                    .collect(),
                None => vec![],
            };
            if let Some((k, _)) = args
                .iter()
                .find(|(k, _)| k.to_ascii_uppercase().starts_with("BUILDKIT_"))
            {
                return err(format!(
                    "{}: the build arg '{k}' configures BuildKit itself (BUILDKIT_SYNTAX picks a frontend, which runs code); remove it",
                    at.whose("build.args")
                ));
            }
            (
                text("context")?.unwrap_or_else(|| ".".into()),
                text("dockerfile")?,
                args,
                text("target")?,
            )
        }
        _ => return Err(at.wrong("build", n, "a path or a mapping")),
    };
    let context = at.path("build.context", &context, dir)?;
    let dockerfile = at.path(
        "build.dockerfile",
        dockerfile.as_deref().unwrap_or("Dockerfile"),
        &context,
    )?;
    Ok(Build {
        context,
        dockerfile,
        args,
        target,
    })
}

fn env_files(at: &At, n: &Node) -> Result<Vec<Vec<(String, String)>>, Refusal> {
    let entries: Vec<(String, bool)> = match &n.kind {
        Kind::Scalar { .. } => vec![(at.text("env_file", n)?, true)],
        Kind::Seq(items) => items
            .iter()
            .map(|i| match &i.kind {
                Kind::Map(_) => {
                    let m = at.fields("env_file", i, &["path", "required"])?;
                    let get = |k: &str| m.iter().find(|(x, _)| x == k).map(|(_, v)| v);
                    let path = get("path")
                        .ok_or_else(|| at.wrong("env_file", i, "a mapping with a path"))?;
                    let required = get("required")
                        .map(|r| at.boolean("env_file.required", r))
                        .transpose()?;
                    Ok((at.text("env_file", path)?, required.unwrap_or(true)))
                }
                _ => Ok((at.text("env_file", i)?, true)),
            })
            .collect::<Result<_, Refusal>>()?,
        _ => return Err(at.wrong("env_file", n, "a path or a list of paths")),
    };
    if entries.len() > MAX_ENV_FILES {
        return err(format!(
            "{}: {} files; at most {MAX_ENV_FILES}",
            at.whose("env_file"),
            entries.len()
        ));
    }
    let mut out = Vec::new();
    for (p, required) in entries {
        let abs = at.path("env_file", &p, at.cx.dir)?;
        match super::package::read_regular(&abs, super::yaml::MAX_BYTES) {
            Ok(t) => {
                at.cx.spend(t.len())?;
                out.push(parse_dotenv(&t))
            }
            Err(_) if !required => {}
            Err(e) => {
                return err(format!(
                    "{}: cannot read '{p}' ({e}); add it to the package or remove it",
                    at.whose("env_file")
                ))
            }
        }
    }
    Ok(out)
}

/// One entry of a service's `volumes`, in the short syntax or the long one.
fn mount(at: &At, n: &Node) -> Result<Mount, Refusal> {
    match &n.kind {
        Kind::Scalar { .. } => short_mount(at, n),
        Kind::Map(_) => long_mount(at, n),
        _ => Err(at.wrong("volumes", n, "a string or a mapping")),
    }
}

/// `SOURCE:TARGET[:MODE]` or `TARGET`: a path source is a bind mount (inside the package), a
/// name a named volume.
fn short_mount(at: &At, n: &Node) -> Result<Mount, Refusal> {
    let dir = at.cx.dir;
    let spec = at.text("volumes", n)?;
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, target, mode) = match parts.as_slice() {
        [t] => {
            return Ok(Mount::Volume {
                source: None,
                target: t.to_string(),
                read_only: false,
            })
        }
        [s, t] => (*s, *t, ""),
        [s, t, m] => (*s, *t, *m),
        _ => {
            return err(format!(
                "{}: cannot read '{spec}'; write SOURCE:TARGET[:ro]",
                at.whose("volumes")
            ))
        }
    };
    if !["", "ro", "rw"].contains(&mode) {
        return err(format!(
            "{}: the mode '{mode}' of '{spec}' is not allowed; use ro or rw",
            at.whose("volumes")
        ));
    }
    if src.starts_with(['.', '/', '~']) {
        Ok(Mount::Bind {
            source: at.path("volumes", src, dir)?,
            target: target.into(),
        })
    } else {
        Ok(Mount::Volume {
            source: Some(src.into()),
            target: target.into(),
            read_only: mode == "ro",
        })
    }
}

/// The long syntax: `type` bind, volume or tmpfs, and nothing else.
fn long_mount(at: &At, n: &Node) -> Result<Mount, Refusal> {
    let dir = at.cx.dir;
    let m = at.fields(
        "volumes",
        n,
        &["type", "source", "target", "read_only", "volume", "tmpfs"],
    )?;
    let get = |k: &str| m.iter().find(|(x, _)| x == k).map(|(_, v)| v);
    let text = |k: &str| get(k).map(|v| at.text("volumes", v)).transpose();
    let ty = text("type")?.unwrap_or_else(|| "volume".into());
    let target =
        text("target")?.ok_or_else(|| at.wrong("volumes", n, "a mapping with a target"))?;
    let source = text("source")?.filter(|s| !s.is_empty());
    let read_only = get("read_only")
        .map(|r| at.boolean("volumes.read_only", r))
        .transpose()?
        .unwrap_or(false);
    if let Some(v) = get("volume") {
        at.fields("volumes.volume", v, &["nocopy"])?;
    }
    match ty.as_str() {
        "bind" => {
            let src = source.ok_or_else(|| at.wrong("volumes", n, "a bind with a source"))?;
            Ok(Mount::Bind { source: at.path("volumes", &src, dir)?, target })
        }
        "volume" => Ok(Mount::Volume { source, target, read_only }),
        "tmpfs" => {
            let size = match get("tmpfs") {
                Some(t) => {
                    let f = at.fields("volumes.tmpfs", t, &["size"])?;
                    f.first().map(|(_, s)| at.bytes("volumes.tmpfs.size", s)).transpose()?
                }
                None => None,
            };
            Ok(Mount::Tmpfs { target, size })
        }
        other => err(format!(
            "{}: volumes of type '{other}' are not allowed for agents; use a bind mount inside the package or a named volume",
            at.whose("volumes")
        )),
    }
}

fn service_networks(at: &At, n: &Node) -> Result<Vec<(String, Vec<String>)>, Refusal> {
    match &n.kind {
        Kind::Seq(_) => Ok(at
            .list("networks", n)?
            .into_iter()
            .map(|k| (k, vec![]))
            .collect()),
        Kind::Map(m) => m
            .iter()
            .map(|(k, opts)| {
                let f = at
                    .fields(&format!("networks.{k}"), opts, &["aliases"])
                    .map_err(|e| Refusal(format!("{e}; only aliases may be set on a network")))?;
                let aliases = match f.first() {
                    Some((_, a)) => at.list("networks.aliases", a)?,
                    None => vec![],
                };
                Ok((k.clone(), aliases))
            })
            .collect(),
        _ => Err(at.wrong("networks", n, "a list or a mapping")),
    }
}

fn depends_on(at: &At, n: &Node) -> Result<Vec<(String, String)>, Refusal> {
    match &n.kind {
        Kind::Seq(_) => Ok(at
            .list("depends_on", n)?
            .into_iter()
            .map(|k| (k, "service_started".to_string()))
            .collect()),
        Kind::Map(m) => m
            .iter()
            .map(|(k, opts)| {
                let f = at.fields("depends_on", opts, &["condition", "restart", "required"])?;
                let mut cond = "service_started".to_string();
                for (o, v) in f {
                    match o.as_str() {
                        "condition" => cond = at.text("depends_on.condition", v)?,
                        _ => {
                            at.boolean("depends_on", v)?;
                        }
                    }
                }
                if ![
                    "service_started",
                    "service_healthy",
                    "service_completed_successfully",
                ]
                .contains(&cond.as_str())
                {
                    return err(format!(
                        "{}: unknown condition '{cond}'",
                        at.whose("depends_on")
                    ));
                }
                Ok((k.clone(), cond))
            })
            .collect(),
        _ => Err(at.wrong("depends_on", n, "a list or a mapping")),
    }
}

fn healthcheck(at: &At, n: &Node) -> Result<Healthcheck, Refusal> {
    let m = at.fields(
        "healthcheck",
        n,
        &[
            "test",
            "interval",
            "timeout",
            "start_period",
            "retries",
            "disable",
        ],
    )?;
    let mut h = Healthcheck::default();
    for (k, v) in m {
        match k.as_str() {
            "test" => {
                h.test = Some(at.str_or_list("healthcheck.test", v).map(|t| {
                    if v.as_seq().is_some() {
                        t
                    } else {
                        vec!["CMD-SHELL".to_string(), t[0].clone()]
                    }
                })?)
            }
            "interval" => h.interval = Some(at.duration("healthcheck.interval", v)?),
            "timeout" => h.timeout = Some(at.duration("healthcheck.timeout", v)?),
            "start_period" => h.start_period = Some(at.duration("healthcheck.start_period", v)?),
            "retries" => h.retries = Some(at.count("healthcheck.retries", v)?),
            _ => h.disable = at.boolean("healthcheck.disable", v)?,
        }
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn read_str(text: &str) -> Result<Package, Refusal> {
        let vars = Vars(vec![("OPENAI_API_KEY".into(), "sk-1".into())]);
        let cx = Context::new(Path::new("/work/pkg"), &vars, "nasiko-network");
        read(&super::super::yaml::read(text)?, &cx)
    }

    #[test]
    fn sizes_and_durations_read_as_compose_reads_them() {
        assert_eq!(parse_bytes("512m"), Some(512 << 20));
        assert_eq!(parse_bytes("1GB"), Some(1 << 30));
        assert_eq!(parse_bytes("1024"), Some(1024));
        assert_eq!(parse_bytes("1x"), None);
        assert_eq!(parse_duration_ms("1m30s"), Some(90_000));
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("1ms"), Some(1));
        assert_eq!(parse_duration_ms("10"), None);
    }

    #[test]
    fn one_type_per_key() {
        for (text, needle) in [
            (
                "services: {a: {build: .}}\nnetworks: {n: {external: \"true\"}}",
                "must be true or false",
            ),
            (
                "services: {a: {build: .}}\nnetworks: {n: {external: yes}}",
                "must be true or false",
            ),
            (
                "services: {a: {build: ., tty: 'true'}}",
                "'tty' (line 1) is a quoted string, but must be true or false",
            ),
            (
                "services: {a: {build: ., volumes: {x: /}}}",
                "must be a list",
            ),
            (
                "services: {a: {build: ., labels: [[a]]}}",
                "must be a string",
            ),
            (
                "services: {a: {build: ., environment: {A: [1]}}}",
                "must be a string",
            ),
            ("services: {a: {build: ., mem_limit: lots}}", "a size"),
            (
                "services: {a: {build: ., env_file: {path: x}}}",
                "a path or a list",
            ),
        ] {
            let e = read_str(text).unwrap_err().0;
            assert!(e.contains(needle), "{text}\n→ {e}");
        }
    }

    #[test]
    fn interpolation_is_resolved_from_the_list_and_then_checked() {
        let p = read_str("services:\n  a:\n    build: .\n    environment: {K: '${OPENAI_API_KEY:-}', R: '${REDIS_URL}', D: 'a$$b'}\n    volumes: ['${HOME:-.}/data:/d']\n").unwrap();
        let env = &p.services[0].environment;
        assert_eq!(
            env,
            &[
                ("K".into(), "sk-1".into()),
                ("R".into(), String::new()),
                ("D".into(), "a$b".into())
            ]
        );
        assert_eq!(
            p.services[0].volumes[0],
            Mount::Bind {
                source: "/work/pkg/data".into(),
                target: "/d".into()
            }
        );
        let e = read_str("services: {a: {build: ., volumes: ['${HOME:-/}:/host']}}")
            .unwrap_err()
            .0;
        assert!(e.contains("outside the package"), "{e}");
        let e = read_str("services: {a: {build: ., labels: {'${X}': v}}}")
            .unwrap_err()
            .0;
        assert!(e.contains("has '$'"), "{e}");
    }

    #[test]
    fn dotenv_lines_comments_quotes_and_dollars() {
        let v = parse_dotenv("# c\nA=1\nexport B=\"two words\"\nC='x'\nbad line\nD=v # trailing\n=nokey\nE=p$ss$$w\n");
        assert_eq!(
            v,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x".into()),
                ("D".into(), "v".into()),
                ("E".into(), "p$ss$$w".into())
            ]
        );
    }
}
