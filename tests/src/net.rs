//! One isolated test network: a bridge in a namespace of its own and one namespace per "host",
//! each with its own loopback and an address on the bridge. Torn down completely on drop.

use std::ffi::OsStr;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::curl::{CurlError, curl_in};
use crate::netns;
use crate::process::run;

/// The subnet every `Net` uses (RFC 2544 benchmarking space: never routed anywhere). Each `Net` is
/// its own L2 segment in its own namespaces, so parallel tests reuse it without clashing.
pub const SUBNET_PREFIX: [u8; 3] = [198, 18, 0];
/// First host octet handed out; the harness's hosts get .10, .11, … in creation order.
pub const FIRST_HOST_OCTET: u8 = 10;

/// The nftables table a partition lives in, inside the host's namespace.
const CUT_TABLE: &str = "hmt_partition";

static NET_COUNTER: AtomicU32 = AtomicU32::new(0);

/// One test network. Create it first in a test (so it is dropped last): dropping it kills every
/// process in its namespaces and deletes them, even when the test panics.
#[derive(Debug)]
pub struct Net {
    id: String,
    bridge_ns: String,
    hosts: Mutex<Vec<Host>>,
}

impl Net {
    /// Creates the bridge namespace with `br0` up. Checks the preconditions ([`require_root`])
    /// and removes leftovers of earlier, killed test runs first.
    ///
    /// [`require_root`]: crate::require_root
    #[track_caller]
    pub fn new() -> Net {
        crate::require_root();
        netns::sweep_stale();
        let id = format!(
            "{}-{}",
            netns::process_prefix(),
            NET_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        // Built before anything exists, so a failure below still tears down whatever was made.
        let net = Net {
            bridge_ns: format!("{id}-br"),
            id,
            hosts: Mutex::new(Vec::new()),
        };
        netns::ip(&["netns", "add", &net.bridge_ns]);
        let n = ["-n", net.bridge_ns.as_str()];
        netns::ip(&[&n[..], &["link", "add", "br0", "type", "bridge"]].concat());
        netns::ip(&[&n[..], &["link", "set", "br0", "up"]].concat());
        net
    }

    /// `hmt<pid>-<n>`: the prefix of this network's namespace names.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The namespace holding the bridge.
    pub fn bridge_ns(&self) -> &str {
        &self.bridge_ns
    }

    /// Adds a host: a namespace `<net id>-<name>` with `lo` up and `eth0` on the bridge with the
    /// next free address, resolving through `127.0.0.1` (its agent's DNS shim, once one runs).
    ///
    /// `name` is the logical host name (also used as the agent's `host`): lowercase
    /// `[a-z0-9.-]`, unique within this `Net`.
    #[track_caller]
    pub fn host(&self, name: &str) -> Host {
        assert!(
            !name.is_empty()
                && name.len() <= 63
                && name.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'-'
                    || b == b'.'),
            "host name {name:?} must be 1..63 chars of [a-z0-9.-]"
        );
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        assert!(
            hosts.iter().all(|h| h.name != name),
            "host {name:?} already exists in {}",
            self.id
        );
        let index = u8::try_from(hosts.len())
            .ok()
            .filter(|i| i.checked_add(FIRST_HOST_OCTET).is_some_and(|o| o < 255))
            .unwrap_or_else(|| panic!("{} is out of addresses", self.id));
        let [a, b, c] = SUBNET_PREFIX;
        let host = Host {
            name: name.to_string(),
            ns: format!("{}-{name}", self.id),
            addr: Ipv4Addr::new(a, b, c, FIRST_HOST_OCTET + index),
        };
        // Registered before it exists, so that Drop cleans up a half-built host too.
        hosts.push(host.clone());
        drop(hosts);

        // The resolver file must be in place before anything runs in the namespace.
        let etc = netns::etc_dir(&host.ns);
        std::fs::create_dir_all(&etc).unwrap_or_else(|e| panic!("creating {}: {e}", etc.display()));
        std::fs::write(etc.join("resolv.conf"), "nameserver 127.0.0.1\n")
            .unwrap_or_else(|e| panic!("writing {}/resolv.conf: {e}", etc.display()));

        let ns = host.ns.as_str();
        let br = self.bridge_ns.as_str();
        // Link names only ever exist inside these namespaces: the veth pair is created in the
        // bridge namespace with its peer placed straight into the host's, so nothing touches the
        // root namespace and two Nets (or two test processes) can't collide on `hN`/`eth0`.
        let link = format!("h{index}");
        let addr = format!("{}/24", host.addr);
        netns::ip(&["netns", "add", ns]);
        netns::ip(&["-n", ns, "link", "set", "lo", "up"]);
        netns::ip(&[
            "-n", br, "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ]);
        netns::ip(&["-n", br, "link", "set", &link, "master", "br0", "up"]);
        netns::ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"]);
        netns::ip(&["-n", ns, "link", "set", "eth0", "up"]);
        host
    }

    /// The hosts created so far, in creation order.
    pub fn hosts(&self) -> Vec<Host> {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Default for Net {
    fn default() -> Self {
        Net::new()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let hosts = std::mem::take(&mut *self.hosts.lock().unwrap_or_else(|p| p.into_inner()));
        for host in hosts.iter().rev() {
            netns::destroy(&host.ns);
        }
        netns::destroy(&self.bridge_ns);
    }
}

/// One host of a [`Net`]: a network namespace with an address on the bridge. Cheap to clone; it
/// does not own the namespace (the `Net` does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    name: String,
    ns: String,
    addr: Ipv4Addr,
}

impl Host {
    /// The logical name, e.g. `"a"`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace name, e.g. `"hmt1234-0-a"`.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The host's address on the bridge.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// `ip netns exec NS program`: a command that runs inside this host (with `/etc/resolv.conf`
    /// pointing at 127.0.0.1 and proxy variables removed).
    pub fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        netns::exec(&self.ns, program)
    }

    /// Runs `f` inside this host on a thread of its own: sockets it opens (std or a tokio
    /// runtime it builds) belong to this host, e.g. a raw `TcpStream` to a VIP.
    pub fn in_ns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        netns::run_in(&self.ns, f)
    }

    /// Runs `program args…` inside this host to completion (killed and panicking after 60 s) and
    /// returns its output, whatever the exit status.
    #[track_caller]
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        let mut cmd = self.cmd(program);
        cmd.args(args);
        run(cmd, Duration::from_secs(60))
    }

    /// Like [`Host::run`] but panics, showing stderr, unless the exit status is 0; returns stdout.
    #[track_caller]
    pub fn run_ok(&self, program: &str, args: &[&str]) -> String {
        let out = self.run(program, args);
        assert!(
            out.status.success(),
            "`{program} {}` in {} failed ({}): {}{}",
            args.join(" "),
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// GET `url` with curl from inside this host (2 s connect timeout, 5 s overall).
    pub fn curl(&self, url: &str) -> Result<(u16, String), CurlError> {
        curl_in(&self.ns, &[url])
    }

    /// curl with extra arguments (e.g. `["-H", "x-canary: 1", url]`); see [`crate::curl::curl_in`].
    pub fn curl_args(&self, args: &[&str]) -> Result<(u16, String), CurlError> {
        curl_in(&self.ns, args)
    }

    /// Partitions this host from `ip`: every packet between them is silently lost on this host's
    /// `eth0`, both ways (so connects time out and established connections stall, exactly like a
    /// network partition, rather than failing fast). Cumulative with earlier cuts until
    /// [`Host::heal`]. Loopback traffic inside the host is unaffected.
    #[track_caller]
    pub fn cut_from(&self, ip: Ipv4Addr) {
        self.nft_partition(&format!(
            "add rule netdev {CUT_TABLE} in ip saddr {ip} drop\n\
             add rule netdev {CUT_TABLE} out ip daddr {ip} drop\n"
        ));
    }

    /// Cuts this host off from every other host (all of `eth0`, ARP included) until
    /// [`Host::heal`]. Its loopback keeps working.
    #[track_caller]
    pub fn isolate(&self) {
        self.nft_partition(&format!(
            "add rule netdev {CUT_TABLE} in drop\nadd rule netdev {CUT_TABLE} out drop\n"
        ));
    }

    /// Removes every cut made by [`Host::cut_from`] and [`Host::isolate`]. Harmless when there are
    /// none.
    #[track_caller]
    pub fn heal(&self) {
        let out = self.run("nft", &["delete", "table", "netdev", CUT_TABLE]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("No such file or directory"),
            "healing {}: {err}",
            self.name
        );
    }

    /// Applies the partition table (created on first use; `add` is idempotent) plus `rules`.
    ///
    /// The netdev ingress/egress hooks sit at the device, below the IP stack: a drop in the `inet`
    /// output hook instead makes UDP `sendto` fail at once with EPERM, which no real partition
    /// does.
    #[track_caller]
    fn nft_partition(&self, rules: &str) {
        let script = format!(
            "add table netdev {CUT_TABLE}\n\
             add chain netdev {CUT_TABLE} in {{ type filter hook ingress device \"eth0\" priority -10; policy accept; }}\n\
             add chain netdev {CUT_TABLE} out {{ type filter hook egress device \"eth0\" priority -10; policy accept; }}\n\
             {rules}"
        );
        let mut file = tempfile::NamedTempFile::new().expect("creating a temp file for nft");
        file.write_all(script.as_bytes())
            .expect("writing the nft script");
        let path = file.path().to_string_lossy().into_owned();
        self.run_ok("nft", &["-f", &path]);
    }
}
