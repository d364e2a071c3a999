//! The control API over its unix socket, with the service's real
//! supervisor running fake children (the backends listen on their sockets,
//! the "VMM" sleeps; no guest boots here — the nested scenario `vmm-agent`
//! boots the real one). Every route `openapi.json` lists is called and
//! every answer is checked against the document.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::{Method, StatusCode};
use rayosd::client::{request, request_raw};
use rayosd::policy::{Machine, Policy};
use rayosd::vm::Tools;
use serde_json::{json, Value};

struct Rig {
    _dir: tempfile::TempDir,
    root: PathBuf,
    running: Option<rayosd::Running>,
    socket: PathBuf,
}

const FAKE_BACKEND: &str = r#"#!/bin/sh
# A backend stand-in: listens on the socket it is given, then idles.
while [ $# -gt 0 ]; do
    case "$1" in --socket-path|--socket) s="$2"; shift ;; esac
    shift
done
exec python3 -c 'import socket,sys,time
s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8); time.sleep(600)' "$s"
"#;

fn write_exe(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

async fn rig(extra_policy: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let image = root.join("image");
    std::fs::create_dir_all(image.join("rootfs")).unwrap();
    std::fs::write(image.join("vmlinuz"), b"k").unwrap();
    std::fs::write(image.join("initramfs.cpio.gz"), b"i").unwrap();
    std::fs::write(
        image.join("manifest.json"),
        r#"{"kernel_cmdline":"rayos.root=rootfs","vmlinuz":"vmlinuz","initramfs":"initramfs.cpio.gz","rootfs":"rootfs"}"#,
    )
    .unwrap();
    write_exe(&root.join("backend"), FAKE_BACKEND);
    // The "VMM" never boots a guest: the VM stays `starting` until stopped.
    write_exe(&root.join("vmm"), "#!/bin/sh\nexec sleep 600\n");
    let text = format!(
        "[host]\nruntime_dir = \"{r}/run\"\nlog_dir = \"{r}/log\"\nstop_timeout_s = 2\nagent_timeout_s = 600\n\
         [vm.linux]\nimage = \"{r}/image\"\nmemory = 256\ncpus = 1\nautostart = false\n{extra_policy}",
        r = root.display()
    );
    let machine = Machine { cpus: 2, memory_mib: 4096, runtime_dir: root.join("run") };
    let policy = Policy::parse_str(Some(&root.join("policy.toml")), &text, &machine).unwrap();
    let tools = Tools {
        rayos_vmm: root.join("vmm"),
        rayos_vsock: root.join("backend"),
        virtiofsd: root.join("backend"),
        bridge: None,
    };
    let running =
        rayosd::start(rayosd::ServiceOptions { policy, tools, resolver: None, autostart: false }).await.unwrap();
    let socket = running.socket.clone();
    Rig { _dir: dir, root, running: Some(running), socket }
}

impl Rig {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        request(&self.socket, method, path, body.as_ref()).await.unwrap()
    }

    async fn state(&self) -> String {
        self.call(Method::GET, "/v1/vms/linux", None).await.1["state"].as_str().unwrap().to_string()
    }

    async fn wait_state(&self, want: &str) {
        for _ in 0..200 {
            if self.state().await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("VM never reached {want}: {}", self.state().await);
    }

    async fn shutdown(mut self) {
        self.running.take().unwrap().shutdown().await;
    }
}

/// A small JSON Schema check for the subset openapi.json uses.
fn check_schema(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let path = r.trim_start_matches("#/").split('/').fold(doc, |d, k| &d[k]);
        return check_schema(doc, path, v, at);
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => false,
        });
        if !ok {
            return Err(format!("{at}: {v} is not {types:?}"));
        }
    }
    if let Some(e) = schema["enum"].as_array() {
        if !e.contains(v) {
            return Err(format!("{at}: {v} not in {e:?}"));
        }
    }
    if let Value::Object(o) = v {
        for r in schema["required"].as_array().into_iter().flatten() {
            let k = r.as_str().unwrap();
            if !o.contains_key(k) {
                return Err(format!("{at}: missing {k}"));
            }
        }
        if let Some(props) = schema["properties"].as_object() {
            for (k, s) in props {
                if let Some(x) = o.get(k) {
                    check_schema(doc, s, x, &format!("{at}.{k}"))?;
                }
            }
        }
    }
    if let (Value::Array(a), Some(items)) = (v, schema.get("items")) {
        for (i, x) in a.iter().enumerate() {
            check_schema(doc, items, x, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

fn openapi() -> Value {
    serde_json::from_str(include_str!("../openapi.json")).unwrap()
}

/// Checks an answer against the document's responses for `path` `method`.
fn conforms(doc: &Value, path: &str, method: &str, status: StatusCode, body: &Value) {
    let op = &doc["paths"][path][method];
    let resp = &op["responses"][status.as_str()];
    assert!(!resp.is_null(), "{method} {path} answered {status}, which openapi.json does not list: {body}");
    let resp = match resp["$ref"].as_str() {
        Some(r) => r.trim_start_matches("#/").split('/').fold(doc, |d, k| &d[k]),
        None => resp,
    };
    if let Some(schema) = resp.pointer("/content/application~1json/schema") {
        check_schema(doc, schema, body, &format!("{method} {path} {status}")).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_answers_as_documented() {
    let r = rig("").await;
    let doc = openapi();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 10, "the document lists every route");
    let mut called = 0;
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            if path == "/v1/events" {
                // A plain GET is not an upgrade: documented 400/426; the stream itself is tested below.
                let (status, _) = request_raw(&r.socket, Method::GET, path, None).await.unwrap();
                assert!(op["responses"][status.as_str()].is_object(), "GET /v1/events answered {status}");
                called += 1;
                continue;
            }
            let concrete = path.replace("{name}", "linux");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let body = op.pointer("/requestBody/content/application~1json/example").cloned();
            let body = if m == Method::POST && body.is_none() { Some(json!({})) } else { body };
            let (status, v) = r.call(m.clone(), &concrete, body).await;
            conforms(&doc, path, method, status, &v);
            // Unknown VMs are named.
            if path.contains("{name}") {
                let (status, v) = r.call(m, &path.replace("{name}", "nosuchvm"), Some(json!({}))).await;
                assert_eq!(status, StatusCode::NOT_FOUND);
                assert_eq!(v["error"], "unknown_vm");
                conforms(&doc, path, method, status, &v);
            }
            called += 1;
        }
    }
    assert_eq!(called, 11);
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_clear_errors() {
    let r = rig("").await;
    let (s, b) = request_raw(&r.socket, Method::POST, "/v1/launch", Some(b"{not json")).await.unwrap();
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!((s, v["error"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{v}");
    let big = format!("{{\"request\":\"{}\"}}", "x".repeat(rayosd::api::MAX_BODY + 10));
    let (s, _) = request_raw(&r.socket, Method::POST, "/v1/launch", Some(big.as_bytes())).await.unwrap();
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    let (s, v) = r.call(Method::POST, "/v1/launch", Some(json!({"app": "foot", "request": "both"}))).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")));
    let (s, v) = r.call(Method::POST, "/v1/launch", Some(json!({"app": "foot", "env": {"LD_PRELOAD": "/x"}}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "unknown fields are refused: {v}");
    let (s, v) = r.call(Method::GET, "/v2/nothing", None).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_refuses_before_the_guest_is_asked() {
    let r = rig("apps = [\"foot.desktop\"]\n").await;
    // The VM is not even running: the host's policy answers first.
    let (s, v) = r.call(Method::POST, "/v1/launch", Some(json!({"vm": "linux", "command": ["sh", "-c", "id"]}))).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::FORBIDDEN, Some("policy")), "{v}");
    let (s, v) = r.call(Method::POST, "/v1/launch", Some(json!({"vm": "linux", "app": "xterm.desktop"}))).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::FORBIDDEN, Some("policy")), "{v}");
    let (s, v) = r.call(Method::POST, "/v1/launch", Some(json!({"vm": "linux", "app": "foot.desktop"}))).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::CONFLICT, Some("vm_not_running")),
        "allowed, but the VM is down: {v}"
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests_are_answered() {
    let r = rig("").await;
    let mut tasks = vec![];
    for i in 0..200 {
        let s = r.socket.clone();
        tasks.push(tokio::spawn(async move {
            let path = if i % 2 == 0 { "/v1/vms" } else { "/v1/health" };
            request(&s, Method::GET, path, None).await.unwrap().0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_sees_a_vm_start_and_stop_and_stop_leaves_nothing() {
    let r = rig("").await;
    let socket = r.socket.clone();
    let watcher = tokio::task::spawn_blocking(move || {
        let c = rayosd::client::ApiClient::new(socket);
        let mut seen = vec![];
        c.events(Some(50), Duration::from_secs(20), |v| {
            seen.push(v.clone());
            !(v["type"] == "vm_state" && v["state"] == "stopped")
        })
        .unwrap();
        seen
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, v) = r.call(Method::POST, "/v1/vms/linux/start", Some(json!({}))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    r.wait_state("starting").await;
    let (_, v) = r.call(Method::GET, "/v1/vms/linux", None).await;
    let children: Vec<&str> = v["children"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(children, ["virtiofsd-rootfs", "rayos-vsock", "rayos-vmm"]);
    let pids: Vec<i32> = v["children"].as_array().unwrap().iter().map(|c| c["pid"].as_i64().unwrap() as i32).collect();
    let rt = r.root.join("run/vm-linux");
    assert!(rt.join("vsock.sock").exists() || rt.join("vhost-vsock.sock").exists());
    assert_eq!(std::fs::metadata(&rt).unwrap().permissions().mode() & 0o777, 0o700);
    let (s, v) = r.call(Method::POST, "/v1/vms/linux/start", Some(json!({}))).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::CONFLICT, Some("vm_state")));

    let (s, v) = r.call(Method::POST, "/v1/vms/linux/stop", Some(json!({}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "stopped", "{v}");
    for pid in pids {
        // SAFETY: signal 0 only checks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0;
        assert!(gone, "child {pid} still runs after stop");
    }
    assert!(!rt.exists(), "stop removes the VM's runtime folder");
    let seen = watcher.await.unwrap();
    let states: Vec<&str> =
        seen.iter().filter(|e| e["type"] == "vm_state").map(|e| e["state"].as_str().unwrap()).collect();
    assert!(states.starts_with(&["starting"]), "{seen:?}");
    assert!(states.contains(&"stopping") && states.last() == Some(&"stopped"), "{seen:?}");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_dying_during_boot_fails_the_boot_and_is_named() {
    let r = rig("").await;
    r.call(Method::POST, "/v1/vms/linux/start", Some(json!({}))).await;
    r.wait_state("starting").await;
    let (_, v) = r.call(Method::GET, "/v1/vms/linux", None).await;
    let vsock =
        v["children"].as_array().unwrap().iter().find(|c| c["name"] == "rayos-vsock").unwrap()["pid"].as_i64().unwrap();
    // SAFETY: killing a child process of this test's service.
    unsafe { libc::kill(vsock as i32, libc::SIGKILL) };
    // While booting, a dead backend fails the boot (the VM cannot have come up).
    r.wait_state("failed").await;
    let (_, v) = r.call(Method::GET, "/v1/vms/linux", None).await;
    assert!(v["last_exit"].as_str().unwrap().contains("rayos-vsock"), "{v}");
    assert!(!r.root.join("run/vm-linux").exists());
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_another_user_is_refused() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP a_peer_of_another_user_is_refused: needs root to connect as another user");
        return;
    }
    let r = rig("").await;
    // Open the path so that only the SO_PEERCRED check stands in the way.
    for d in [r.root.as_path(), &r.root.join("run")] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    std::fs::set_permissions(&r.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_UNIX)\ns.connect('{}')\ns.sendall(b'GET /v1/vms HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')\nprint(s.recv(200).split(b'\\r\\n')[0].decode())",
        r.socket.display()
    );
    let out =
        tokio::process::Command::new("python3").arg("-c").arg(&script).uid(65534).gid(65534).output().await.unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.starts_with("HTTP/1.1 403"), "nobody got {line:?} {}", String::from_utf8_lossy(&out.stderr));
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_display_mode_is_set_per_vm_and_checked() {
    let r = rig("").await;
    let (_, v) = r.call(Method::GET, "/v1/vms/linux", None).await;
    assert_eq!(v["display"], "apps");
    // Without a compositor socket folder there is nowhere to show a desktop.
    let (s, v) = r.call(Method::POST, "/v1/vms/linux/display", Some(json!({"display": "desktop"}))).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::CONFLICT, Some("no_compositor")), "{v}");
    let (s, _) = r.call(Method::POST, "/v1/vms/linux/display", Some(json!({"display": "fullscreen"}))).await;
    assert!(s.is_client_error(), "{s}");
    r.shutdown().await;
}
