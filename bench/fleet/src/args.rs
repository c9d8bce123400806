//! The command line.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug)]
pub struct Args {
    pub bin: PathBuf,
    pub agents: usize,
    pub services: usize,
    pub proxies: usize,
    pub real: usize,
    pub ttl: Duration,
    pub steady: Duration,
    pub changes: usize,
    pub dead: usize,
    pub restart: bool,
    /// Simulated agents started per second at the cold start; 0: all at once.
    pub ramp: usize,
}

pub fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let usage = "usage: fleet HOSTMESH_BIN [--agents N] [--services N] [--proxies N] [--real N] \
                 [--ttl S] [--steady S] [--changes N] [--dead N] [--ramp N] [--no-restart]";
    let mut args = Args {
        bin: PathBuf::from(it.next().expect(usage)),
        agents: 100,
        services: 10_000,
        proxies: 1,
        real: 3,
        ttl: Duration::from_secs(10),
        steady: Duration::from_secs(60),
        changes: 20,
        dead: 3,
        restart: true,
        ramp: 0,
    };
    while let Some(flag) = it.next() {
        if flag == "--no-restart" {
            args.restart = false;
            continue;
        }
        let value: u64 = it
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} needs a number; {usage}"));
        let n = usize::try_from(value).expect("a count");
        match flag.as_str() {
            "--agents" => args.agents = n.max(1),
            "--services" => args.services = n,
            "--proxies" => args.proxies = n,
            "--real" => args.real = n,
            "--ttl" => args.ttl = Duration::from_secs(value.max(2)),
            "--steady" => args.steady = Duration::from_secs(value),
            "--changes" => args.changes = n,
            "--dead" => args.dead = n,
            "--ramp" => args.ramp = n,
            _ => panic!("unknown flag {flag}; {usage}"),
        }
    }
    args.dead = args.dead.min(args.agents.saturating_sub(1));
    args
}
