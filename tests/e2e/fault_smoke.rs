//! Proves the fault proxy and the real-server apps of the harness: latency per direction, resets,
//! refusals and stalls on demand; nginx serving a page, a 10 MiB file intact and uploads back;
//! redis answering through the proxy.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use hostmesh_tests::{
    BIG_FILE_LEN, Backend, FaultProxy, Host, Mode, Net, Nginx, Proc, RedisServer, curl_sha256,
    pseudo_random, redis_cli, sha256_hex, try_redis_cli, wait_until,
};

/// Reads each connection to EOF, then answers with the length and SHA-256 of what it read and
/// closes. `argv[1]` is created once it listens.
const DIGEST_SERVER: &str = r#"
import hashlib, socket, sys
s = socket.create_server(("127.0.0.1", 19000))
open(sys.argv[1], "w").close()
while True:
    c, _ = s.accept()
    h, n = hashlib.sha256(), 0
    while True:
        b = c.recv(65536)
        if not b:
            break
        h.update(b)
        n += len(b)
    c.sendall(f"{n} {h.hexdigest()}\n".encode())
    c.close()
"#;

/// Sends the file `argv[1]` to SERVER:19001, half-closes, and prints everything it reads back.
const HALF_CLOSE_CLIENT: &str = r#"
import socket, sys
c = socket.create_connection(("SERVER", 19001))
c.sendall(open(sys.argv[1], "rb").read())
c.shutdown(socket.SHUT_WR)
out = b""
while True:
    b = c.recv(65536)
    if not b:
        break
    out += b
sys.stdout.write(out.decode())
"#;

fn sock(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

/// GETs `url` from `host` and returns curl's own measure of the whole request in seconds
/// (`time_total`: connect to last byte, without process start-up), panicking unless it got 200.
#[track_caller]
fn timed_get(host: &Host, url: &str) -> f64 {
    let out = host.run(
        "curl",
        &[
            "--silent",
            "--show-error",
            "--noproxy",
            "*",
            "--max-time",
            "5",
            "--output",
            "/dev/null",
            "--write-out",
            "%{http_code} %{time_total}",
            url,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let (code, secs) = text.split_once(' ').unwrap_or_else(|| {
        panic!(
            "curl {url}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(code, "200", "curl {url}: {text}");
    secs.trim().parse().expect("curl's time_total")
}

/// The fastest of `n` timed requests: one slow scheduling hiccup on a busy CI machine must not
/// fail a "fast again" check.
fn fastest(host: &Host, url: &str, n: usize) -> f64 {
    (0..n)
        .map(|_| timed_get(host, url))
        .fold(f64::INFINITY, f64::min)
}

#[test]
fn fault_proxy_delays_resets_refuses_and_stalls() {
    let net = Net::new();
    let client = net.host("client");
    let server = net.host("server");
    let app = Backend::http_on(&server, Ipv4Addr::LOCALHOST, 18080, "through the proxy\n");
    // The app only listens on the server's loopback; the proxy exposes it on the bridge.
    let proxy = FaultProxy::start(
        &server,
        sock(server.addr(), 18081),
        sock(Ipv4Addr::LOCALHOST, app.port()),
    );
    let url = proxy.url("/");
    assert_eq!(url, format!("http://{}:18081/", server.addr()));
    assert_eq!(
        client.curl(&url).expect("pass-through"),
        (200, "through the proxy\n".to_string())
    );

    let base = fastest(&client, &url, 3);
    proxy.set_delay(Duration::from_millis(50));
    let delayed = timed_get(&client, &url);
    assert!(
        delayed >= 0.050,
        "a 50 ms response delay must add 50 ms: {delayed:.3}s (base {base:.3}s)"
    );
    proxy.set_delays(Duration::from_millis(50), Duration::from_millis(50));
    let both = timed_get(&client, &url);
    assert!(
        both >= 0.100,
        "50 ms each way must add 100 ms: {both:.3}s (base {base:.3}s)"
    );
    proxy.set_delay(Duration::ZERO);
    let fast = fastest(&client, &url, 3);
    assert!(
        fast < 0.040,
        "without a delay requests are fast again: {fast:.3}s (base {base:.3}s, delayed {delayed:.3}s)"
    );

    eprintln!(
        "time_total: base {base:.4}s, +50 ms {delayed:.4}s, +50/+50 ms {both:.4}s, none {fast:.4}s"
    );

    // 1 + 3 + 1 + 1 + 3 requests so far, one connection each.
    assert_eq!(proxy.connections(), 9);

    proxy.set_mode(Mode::Reset);
    let err = client.curl(&url).expect_err("reset mode");
    // 56 "Recv failure" normally; 55 "Send failure" if the RST beat curl's request out.
    assert!(matches!(err.exit_code, Some(55 | 56)), "{err}");
    assert!(err.stderr.contains("Connection reset by peer"), "{err}");
    assert_eq!(proxy.connections(), 10, "a reset connection was accepted");

    proxy.set_mode(Mode::Refuse);
    let err = client.curl(&url).expect_err("refuse mode");
    assert!(err.is_refused(), "{err}");
    assert_eq!(
        proxy.connections(),
        10,
        "a refused connection is never accepted"
    );

    proxy.set_mode(Mode::Stall);
    let err = client
        .curl_args(&["--max-time", "1", &url])
        .expect_err("stall mode");
    assert!(err.is_timeout(), "{err}");
    assert_eq!(proxy.connections(), 11);

    proxy.set_mode(Mode::Pass);
    assert_eq!(client.curl(&url).expect("pass again").0, 200);
    assert_eq!(proxy.connections(), 12);
    // Each curl closed its connection; the proxy notices within a moment.
    wait_until(Duration::from_secs(5), "no open connections", || {
        proxy.open_connections() == 0
    });
    // 1 + 3 + 1 + 1 + 3 + 1 requests reached the app; the faulted ones never did.
    assert_eq!(app.request_count(), 10);

    // An established connection (a request the app is slow to answer) is cut on demand.
    app.set_delay(Duration::from_secs(30));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = client.cmd("curl");
    cmd.args(["--silent", "--show-error", "--max-time", "20", &url]);
    let mut slow = Proc::spawn(cmd, "slow curl", &dir.path().join("curl.log"));
    wait_until(
        Duration::from_secs(5),
        "the slow request is relayed",
        || app.request_count() == 11 && proxy.open_connections() == 1,
    );
    assert_eq!(proxy.reset_established(), 1);
    let status = slow
        .wait_exit(Duration::from_secs(5))
        .expect("curl ends at the reset");
    assert_eq!(status.code(), Some(56), "{}", slow.log_tail(5));
    assert!(
        slow.log_tail(5).contains("Connection reset by peer"),
        "{}",
        slow.log_tail(5)
    );
}

/// Bytes flow both ways at once through a delayed proxy, in order, and a half-close (client done
/// sending, still reading) is passed on: the server sees EOF, answers, and the client reads it all.
#[test]
fn fault_proxy_streams_and_passes_half_close() {
    let net = Net::new();
    let client = net.host("client");
    let server = net.host("server");
    // Reads to EOF, then answers with the length and SHA-256 of what it read and closes.
    let dir = tempfile::tempdir().expect("temp dir");
    let digest_server = dir.path().join("digest_server.py");
    std::fs::write(&digest_server, DIGEST_SERVER).expect("writing the digest server");
    let ready = dir.path().join("ready");
    let mut cmd = server.cmd("python3");
    cmd.arg(&digest_server).arg(&ready);
    let mut srv = Proc::spawn(cmd, "digest server", &dir.path().join("digest.log"));
    wait_until(Duration::from_secs(10), "digest server listening", || {
        assert!(srv.is_running(), "digest server died: {}", srv.log_tail(20));
        ready.exists()
    });
    let proxy = FaultProxy::start(
        &server,
        sock(server.addr(), 19001),
        sock(Ipv4Addr::LOCALHOST, 19000),
    );
    proxy.set_delays(Duration::from_millis(20), Duration::from_millis(20));

    let payload = pseudo_random(3 * 1024 * 1024, 7);
    let input = dir.path().join("payload");
    std::fs::write(&input, &payload).expect("writing the payload");
    let client_script = HALF_CLOSE_CLIENT.replace("SERVER", &server.addr().to_string());
    let input_s = input.to_string_lossy().into_owned();
    let answer = client.run_ok("python3", &["-c", &client_script, &input_s]);
    assert_eq!(
        answer.trim(),
        format!("{} {}", payload.len(), sha256_hex(&payload))
    );
}

#[test]
fn nginx_serves_the_page_the_big_file_and_uploads() {
    let net = Net::new();
    let client = net.host("client");
    let web = net.host("web");
    let nginx = Nginx::start(&web, 8080, "hello from nginx\n");
    assert_eq!(
        client.curl(&nginx.url("/")).expect("GET /"),
        (200, "hello from nginx\n".to_string())
    );
    assert_eq!(client.curl(&nginx.url("/nope")).expect("GET /nope").0, 404);

    let on_disk = std::fs::read(nginx.big_path()).expect("reading the big file");
    assert_eq!(on_disk.len(), BIG_FILE_LEN);
    assert_eq!(sha256_hex(&on_disk), nginx.big_sha256());
    let got = curl_sha256(&client, &nginx.url("/big"), Duration::from_secs(30)).expect("GET /big");
    assert_eq!(got, (nginx.big_sha256().to_string(), BIG_FILE_LEN));

    // The same through a delayed fault proxy: streamed in order, nothing lost.
    let proxy = FaultProxy::start(
        &web,
        sock(web.addr(), 8081),
        sock(Ipv4Addr::LOCALHOST, 8080),
    );
    proxy.set_delays(Duration::from_millis(10), Duration::from_millis(10));
    let got = curl_sha256(&client, &proxy.url("/big"), Duration::from_secs(30))
        .expect("GET /big through the proxy");
    assert_eq!(got, (nginx.big_sha256().to_string(), BIG_FILE_LEN));

    // Uploads come back byte for byte.
    let dir = tempfile::tempdir().expect("temp dir");
    let upload = pseudo_random(5 * 1024 * 1024, 99);
    let (input, output) = (dir.path().join("up"), dir.path().join("down"));
    std::fs::write(&input, &upload).expect("writing the upload");
    let data_arg = format!("@{}", input.display());
    let output_s = output.to_string_lossy().into_owned();
    for url in [nginx.url("/echo"), proxy.url("/echo")] {
        client.run_ok(
            "curl",
            &[
                "--silent",
                "--show-error",
                "--fail",
                "--max-time",
                "30",
                "--data-binary",
                &data_arg,
                "--output",
                &output_s,
                &url,
            ],
        );
        let echoed = std::fs::read(&output).expect("reading the echo");
        assert_eq!(echoed.len(), upload.len(), "{url}");
        assert_eq!(sha256_hex(&echoed), sha256_hex(&upload), "{url}");
    }
    assert!(
        nginx.access_log().contains("GET /big"),
        "{}",
        nginx.access_log()
    );
}

#[test]
fn redis_answers_through_the_fault_proxy() {
    let net = Net::new();
    let client = net.host("client");
    let db = net.host("db");
    let redis = RedisServer::start(&db, 6379);
    assert_eq!(redis_cli(&client, redis.addr(), &["PING"]), "PONG");

    let proxy = FaultProxy::start(&db, sock(db.addr(), 6380), sock(Ipv4Addr::LOCALHOST, 6379));
    let via = proxy.listen_addr();
    assert_eq!(redis_cli(&client, via, &["PING"]), "PONG");
    assert_eq!(redis_cli(&client, via, &["SET", "k", "v 1"]), "OK");
    assert_eq!(redis_cli(&client, redis.addr(), &["GET", "k"]), "v 1");

    proxy.set_mode(Mode::Refuse);
    let err = try_redis_cli(&client, via, &["PING"]).expect_err("refused");
    assert!(err.contains("refused"), "{err}");
    proxy.set_mode(Mode::Reset);
    try_redis_cli(&client, via, &["PING"]).expect_err("reset");
    proxy.set_mode(Mode::Pass);
    assert_eq!(redis_cli(&client, via, &["PING"]), "PONG");
}
