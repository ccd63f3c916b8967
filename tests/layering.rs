//! The layering rule of docs/architecture.md, checked on the source tree: the protocol crates
//! (`sip`, `media`) perform no I/O, read no clock and depend on nothing in this repository.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Dependencies that would mean I/O, an async runtime or the application layer.
const FORBIDDEN_DEPS: &[&str] = &[
    "tokio",
    "async-std",
    "smol",
    "mio",
    "socket2",
    "sqlx",
    "axum",
    "hyper",
    "reqwest",
    "hound",
    "callplane",
];

/// Source patterns that would mean a clock read, a socket, a file or a sleep.
const FORBIDDEN_CODE: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "thread::sleep",
    "std::net::UdpSocket",
    "std::net::TcpStream",
    "std::net::TcpListener",
    "UdpSocket::bind",
    "TcpStream::connect",
    "std::fs",
    "File::open",
    "File::create",
    "tokio::",
    "std::env::var",
];

/// The names listed in the `[dependencies]` table of a Cargo.toml (not dev-dependencies: tests
/// may use what they like).
fn dependencies(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).expect("manifest readable");
    let mut in_deps = false;
    let mut names = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps
            && !line.starts_with('#')
            && let Some((name, _)) = line.split_once('=')
        {
            names.push(name.trim().to_string());
        }
    }
    names
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source dir readable") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every non-comment line of the Rust files below `src` that contains a forbidden pattern.
/// A file's `#[cfg(test)]` module (by convention its last item) is not scanned: a unit test needs
/// some base `Instant`, and std offers no other way to make one than reading the clock.
fn violations(src: &Path) -> Vec<String> {
    violations_of(src, FORBIDDEN_CODE)
}

/// Like [`violations`], with a given list of patterns.
fn violations_of(src: &Path, patterns: &[&str]) -> Vec<String> {
    let mut files = Vec::new();
    if src.is_file() {
        files.push(src.to_path_buf());
    } else {
        rust_files(src, &mut files);
    }
    assert!(!files.is_empty(), "{} has Rust files", src.display());
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("source readable");
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("#[cfg(test)]") {
                break;
            }
            if code.starts_with("//") {
                continue;
            }
            for pat in patterns {
                if code.contains(pat) {
                    found.push(format!("{}:{}: {pat}", file.display(), n + 1));
                }
            }
        }
    }
    found
}

fn check_crate(crate_dir: &str, sibling: &str) {
    let deps = dependencies(&Path::new(ROOT).join(crate_dir).join("Cargo.toml"));
    assert!(!deps.is_empty(), "{crate_dir} has a [dependencies] table");
    for dep in &deps {
        assert!(
            !FORBIDDEN_DEPS
                .iter()
                .any(|f| dep == f || dep.starts_with(&format!("{f}-"))),
            "{crate_dir} must not depend on {dep}: protocol crates perform no I/O"
        );
        assert!(
            !dep.contains(sibling),
            "{crate_dir} must not depend on {sibling}"
        );
    }
    let bad = violations(&Path::new(ROOT).join(crate_dir).join("src"));
    assert!(
        bad.is_empty(),
        "I/O or clock in {crate_dir}:\n{}",
        bad.join("\n")
    );
}

#[test]
fn sip_crate_performs_no_io_and_reads_no_clock() {
    check_crate("sip", "media");
}

#[test]
fn media_crate_performs_no_io_and_reads_no_clock() {
    check_crate("media", "sip");
}

/// The application layer's rule (ARCHITECTURE.md "The layering rule"): only `store` speaks SQL,
/// only `net` opens sockets, only `files` touches disk, only `clock` (and `net`'s driver) reads
/// time, and `api` holds handles, never sockets, SQL, files or clocks.
#[test]
fn application_modules_keep_to_their_layer() {
    let src = Path::new(ROOT).join("src");
    let mut modules = Vec::new();
    rust_files(&src, &mut modules);
    let rel = |p: &Path| {
        p.strip_prefix(&src)
            .expect("below src")
            .to_string_lossy()
            .into_owned()
    };
    const SQL: &[&str] = &["sqlx::"];
    const SOCKETS: &[&str] = &[
        "tokio::net",
        "std::net::UdpSocket",
        "std::net::TcpStream",
        "std::net::TcpListener",
        "UdpSocket::bind",
        "TcpListener::bind",
    ];
    const DISK: &[&str] = &["std::fs", "File::open", "File::create", "tokio::fs"];
    const CLOCK: &[&str] = &["Instant::now", "SystemTime::now"];
    let mut bad = Vec::new();
    for file in &modules {
        let name = rel(file);
        let in_mod = |m: &str| name == format!("{m}.rs") || name.starts_with(&format!("{m}/"));
        // main.rs is the command line: it may read a file a flag names and probe a route.
        let cli = name == "main.rs";
        if !in_mod("store") {
            bad.extend(violations_of(file, SQL));
        }
        if !in_mod("net") && !cli {
            bad.extend(violations_of(file, SOCKETS));
        }
        if !in_mod("files") && !cli {
            bad.extend(violations_of(file, DISK));
        }
        if !in_mod("clock") && !in_mod("net") {
            bad.extend(violations_of(file, CLOCK));
        }
    }
    assert!(
        bad.is_empty(),
        "a module reaches across its layer:\n{}",
        bad.join("\n")
    );
}

/// The pure half of campaigns (ARCHITECTURE.md: "`script` and the pacing half of `campaign` are
/// pure"): no async runtime, no clock handle, no engine, store, bus or files, so it is tested like
/// the protocol crates.
#[test]
fn pure_campaign_modules_perform_no_io() {
    const IMPURE: &[&str] = &[
        "tokio::",
        "async fn",
        ".await",
        "crate::clock",
        "crate::engine",
        "crate::events",
        "crate::files",
        "crate::net",
        "crate::api",
        "Store",
        "Instant::now",
        "SystemTime::now",
        "std::fs",
        "std::net",
    ];
    let dir = Path::new(ROOT).join("src/campaign");
    let mut bad = Vec::new();
    for m in [
        "model", "phone", "tz", "tz_table", "window", "pacing", "retry", "import", "export",
    ] {
        let file = dir.join(format!("{m}.rs"));
        bad.extend(violations_of(&file, IMPURE));
    }
    assert!(
        bad.is_empty(),
        "a pure campaign module does I/O:\n{}",
        bad.join("\n")
    );
}

#[test]
fn protocol_crates_forbid_clock_reads_in_clippy() {
    for krate in ["sip", "media"] {
        let cfg = std::fs::read_to_string(Path::new(ROOT).join(krate).join("clippy.toml"))
            .expect("clippy.toml present");
        for method in [
            "std::time::Instant::now",
            "std::time::SystemTime::now",
            "std::thread::sleep",
        ] {
            assert!(
                cfg.contains(method),
                "{krate}/clippy.toml disallows {method}"
            );
        }
    }
}

#[test]
fn the_checker_finds_a_clock_read_and_a_socket_but_not_a_comment() {
    // Guard against a checker that cannot fail: plant violations in a scratch tree.
    let dir = std::env::temp_dir().join(format!("callplane-layering-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("inner")).expect("scratch dir");
    std::fs::write(
        dir.join("inner").join("bad.rs"),
        "// Instant::now in a comment is fine\nfn f() { let _ = std::time::Instant::now(); }\n\
         fn g() { let _ = std::net::UdpSocket::bind(\"127.0.0.1:0\"); }\n\
         #[cfg(test)]\nmod tests { fn base() { let _ = std::time::Instant::now(); } }\n",
    )
    .expect("scratch file");
    let found = violations(&dir);
    std::fs::remove_dir_all(&dir).expect("scratch dir removed");
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(found[0].ends_with(":2: Instant::now"), "{found:?}");
    assert!(
        found.iter().all(|f| !f.contains(":1:")),
        "comments are skipped: {found:?}"
    );
}
