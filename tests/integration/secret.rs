//! `phoenix secret …` end to end: the real binary, every PHOENIX_* path in a tempdir, an
//! empty settings file, stdin piped.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;

const AGE: &str = "/usr/bin/age";
const TOKEN: &str = "hf_IntegrationToken_5ac3e1d2b4";
const PASSWORD: &str = "Root-Passw0rd!with spaces";

/// One isolated phoenix installation.
struct Env {
    tmp: tempfile::TempDir,
    key: PathBuf,
}

impl Env {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("phoenix.toml"), "").unwrap();
        let key = tmp.path().join("etc/phoenix/secret.key");
        Self { tmp, key }
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root().join(name)
    }

    fn secrets(&self) -> PathBuf {
        self.dir("secrets")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.secrets().join(format!("{name}.age"))
    }

    /// Run phoenix with `args`, `stdin` piped in, and the key at `key`.
    fn run_with_key(&self, key: &Path, args: &[&str], stdin: &[u8]) -> Output {
        let r = self.root();
        let mut child = Command::new(env!("CARGO_BIN_EXE_phoenix"))
            .args(args)
            .env_clear()
            .env("PHOENIX_SETTINGS", r.join("phoenix.toml"))
            .env("PHOENIX_CONFIG", r.join("phoenix_lxc_configs.json"))
            .env("PHOENIX_HOST", "emulated")
            .env("PHOENIX_STATE_DIR", self.dir("state"))
            .env("PHOENIX_MARKER_DIR", self.dir("markers"))
            .env("PHOENIX_LOG_DIR", self.dir("log"))
            .env("PHOENIX_SECRETS_DIR", self.secrets())
            .env("PHOENIX_SECRET_KEY", key)
            .env("PHOENIX_PVE_LXC_DIR", self.dir("pve/lxc"))
            .env("PHOENIX_DEV_DIR", self.dir("dev"))
            .env("PHOENIX_EMU_ROOT", self.dir("emu"))
            .env("PHOENIX_LXC_PATH", self.dir("lxc"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A command that fails before reading stdin closes it: that is not a test failure.
        if let Err(e) = child.stdin.take().unwrap().write_all(stdin) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
        child.wait_with_output().unwrap()
    }

    fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        self.run_with_key(&self.key, args, stdin)
    }

    fn ok(&self, args: &[&str], stdin: &[u8]) -> String {
        let out = self.run(args, stdin);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn init(self) -> Self {
        self.ok(&["secret", "init"], b"");
        self
    }

    fn reveal(&self, name: &str) -> String {
        let v = self.ok(&["secret", "get", name, "--reveal"], b"");
        v.strip_suffix('\n').unwrap_or(&v).to_owned()
    }

    fn recipient(&self) -> String {
        let t = std::fs::read_to_string(self.secrets().join("recipient.txt")).unwrap();
        t.lines()
            .find(|l| l.starts_with("age1"))
            .unwrap()
            .to_owned()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

/// Every file under `dir`, recursively, with its content.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The stock `age` CLI for the interop tests. It is part of the test environment
/// (`.ci/run` installs it): where it is missing the test fails saying so, never skips.
fn age() -> Command {
    assert!(
        Path::new(AGE).exists(),
        "the age interop tests need {AGE} (`apt-get install age`)"
    );
    Command::new(AGE)
}

#[test]
fn init_writes_a_0600_key_in_a_0700_dir_and_refuses_to_overwrite() {
    let env = Env::new();
    let out = env.ok(&["secret", "init"], b"");
    assert_eq!(mode(&env.key), 0o600);
    assert_eq!(mode(env.key.parent().unwrap()), 0o700);
    assert_eq!(mode(&env.secrets()), 0o700);
    let recipient = env.recipient();
    assert!(out.contains(&recipient), "{out}");
    let key_text = std::fs::read_to_string(&env.key).unwrap();
    assert!(key_text.contains(&format!("# public key: {recipient}")));

    let again = env.run(&["secret", "init"], b"");
    assert_eq!(again.status.code(), Some(2));
    let err = text(&again.stderr);
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&env.key).unwrap(), key_text);

    env.ok(&["secret", "init", "--force"], b"");
    assert_ne!(std::fs::read_to_string(&env.key).unwrap(), key_text);
    assert_ne!(env.recipient(), recipient);
}

#[test]
fn commands_without_a_key_exit_2_and_say_to_init() {
    let env = Env::new();
    let out = env.run(&["secret", "set", "hf_token"], TOKEN.as_bytes());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("phoenix secret init"),
        "{}",
        text(&out.stderr)
    );
    assert!(!env.secrets().exists());
}

#[test]
fn the_value_reaches_no_file_in_clear_base64_or_hex() {
    let env = Env::new().init();
    let out = env.run(
        &["secret", "set", "hf_token"],
        format!("{TOKEN}\n").as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let from = env.root().join("outside/pw.txt");
    std::fs::create_dir_all(from.parent().unwrap()).unwrap();
    std::fs::write(&from, format!("{PASSWORD}\n")).unwrap();
    let out2 = env.run(
        &[
            "secret",
            "set",
            "lxc_root_password",
            "--from-file",
            from.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out2.status.code(), Some(0), "{}", text(&out2.stderr));
    std::fs::remove_file(&from).unwrap();

    // Something was logged, so the log check below looks at a real file.
    assert!(env.dir("log").join("phoenix.log").exists());
    for value in [TOKEN, PASSWORD] {
        let v = value.as_bytes();
        let b64 = base64::engine::general_purpose::STANDARD;
        let b64_nopad = base64::engine::general_purpose::STANDARD_NO_PAD;
        let forms: Vec<Vec<u8>> = vec![
            v.to_vec(),
            b64.encode(v).into_bytes(),
            b64_nopad.encode(v).into_bytes(),
            b64.encode([v, b"\n"].concat()).into_bytes(),
            v.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into_bytes(),
            v.iter()
                .map(|b| format!("{b:02X}"))
                .collect::<String>()
                .into_bytes(),
        ];
        let all = files(env.root());
        assert!(all.iter().any(|(p, _)| p.ends_with("hf_token.age")));
        for (path, content) in &all {
            for form in &forms {
                assert!(
                    !contains(content, form),
                    "{} contains {}",
                    path.display(),
                    text(form)
                );
            }
        }
        for o in [&out, &out2] {
            assert!(!contains(&o.stdout, v) && !contains(&o.stderr, v));
        }
    }
    for dir in ["secrets", "state", "log", "markers"] {
        for (path, _) in files(&env.dir(dir)) {
            assert_eq!(
                mode(&path) & 0o077,
                0,
                "{} is open to others",
                path.display()
            );
        }
    }
    assert_eq!(mode(&env.file("hf_token")), 0o600);
    assert_eq!(env.reveal("hf_token"), TOKEN);
    assert_eq!(env.reveal("lxc_root_password"), PASSWORD);
}

#[test]
fn set_strips_one_newline_and_refuses_an_empty_value() {
    let env = Env::new().init();
    env.ok(&["secret", "set", "two-lines"], b"a\nb\n\n");
    assert_eq!(env.reveal("two-lines"), "a\nb\n");
    for input in [&b""[..], b"\n"] {
        let out = env.run(&["secret", "set", "empty"], input);
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains("empty value for secret `empty`"));
    }
    assert!(!env.file("empty").exists());
    let out = env.run(&["secret", "set", "Bad/Name"], b"value");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("secret name"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn get_prints_only_with_reveal() {
    let env = Env::new().init();
    env.ok(&["secret", "set", "hf_token"], TOKEN.as_bytes());
    let out = env.run(&["secret", "get", "hf_token"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(err.contains("--reveal") && !err.contains(TOKEN), "{err}");
    let absent = env.run(&["secret", "get", "nope", "--reveal"], b"");
    assert_eq!(absent.status.code(), Some(2));
    assert!(text(&absent.stderr).contains("secret `nope` is not in the store"));
    assert_eq!(env.reveal("hf_token"), TOKEN);
}

#[test]
fn list_shows_names_and_dates_never_values() {
    let env = Env::new().init();
    env.ok(&["secret", "set", "hf_token"], TOKEN.as_bytes());
    env.ok(&["secret", "set", "lxc_root_password"], PASSWORD.as_bytes());
    let human = env.ok(&["secret", "list"], b"");
    let lines: Vec<_> = human.lines().collect();
    assert_eq!(lines.len(), 3, "{human}");
    assert_eq!(lines[0], "NAME               MODIFIED", "{human}");
    let lines = &lines[1..];
    let date = regex::Regex::new(r"^\S+\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$").unwrap();
    assert!(
        lines[0].starts_with("hf_token ") && date.is_match(lines[0]),
        "{human}"
    );
    assert!(lines[1].starts_with("lxc_root_password ") && date.is_match(lines[1]));
    let json = env.ok(&["secret", "list", "--json"], b"");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["version"], 1, "{json}");
    let v = &v["secrets"];
    let names: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["hf_token", "lxc_root_password"]);
    assert!(v[0]["modified"].as_str().unwrap().ends_with('Z'));
    for out in [&human, &json] {
        assert!(!out.contains(TOKEN) && !out.contains(PASSWORD), "{out}");
    }
}

#[test]
fn rm_removes_and_names_an_absent_secret() {
    let env = Env::new().init();
    env.ok(&["secret", "set", "hf_token"], TOKEN.as_bytes());
    env.ok(&["secret", "rm", "hf_token"], b"");
    assert!(!env.file("hf_token").exists());
    let out = env.run(&["secret", "rm", "hf_token"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("secret `hf_token` is not in the store"));
}

#[test]
fn a_wrong_key_exits_2_and_changes_nothing() {
    let env = Env::new().init();
    env.ok(&["secret", "set", "hf_token"], TOKEN.as_bytes());
    // Another host's key, made by phoenix itself in another store.
    let other = Env::new().init();
    let before = files(&env.secrets());
    for (args, stdin) in [
        (&["secret", "set", "new_one"][..], &b"value"[..]),
        (&["secret", "get", "hf_token", "--reveal"], b""),
        (&["secret", "list"], b""),
        (&["secret", "rm", "hf_token"], b""),
        (&["secret", "rotate-key"], b""),
        (&["secret", "init"], b""),
    ] {
        let out = env.run_with_key(&other.key, args, stdin);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains("is not the key of the store") && err.contains("nothing was changed"),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty() || !text(&out.stdout).contains(TOKEN));
    }
    assert_eq!(files(&env.secrets()), before);
    assert!(!other.key.with_extension("key.new").exists());
    assert_eq!(env.reveal("hf_token"), TOKEN);
}

#[test]
fn a_key_open_to_others_is_refused_with_the_fix() {
    let env = Env::new().init();
    env.ok(&["secret", "set", "hf_token"], TOKEN.as_bytes());
    std::fs::set_permissions(&env.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    for args in [
        &["secret", "get", "hf_token", "--reveal"][..],
        &["secret", "list"],
        &["secret", "set", "hf_token"],
    ] {
        let out = env.run(args, b"other-value");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("chmod 600 {}", env.key.display())),
            "{err}"
        );
        assert!(!text(&out.stdout).contains(TOKEN));
    }
    std::fs::set_permissions(&env.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(env.reveal("hf_token"), TOKEN);
}

fn legacy_files(env: &Env) -> (PathBuf, PathBuf) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let hf = env.root().join("usr/local/etc/phoenix_hf_token.conf");
    let pw = env.root().join("root/.phoenix_lxc_root_passwd");
    for (p, v) in [(&hf, TOKEN), (&pw, PASSWORD)] {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        // As the bash suite wrote them: `echo "$value" | base64`.
        std::fs::write(p, format!("{}\n", b64.encode(format!("{v}\n")))).unwrap();
    }
    (hf, pw)
}

#[test]
fn import_legacy_stores_decoded_values_and_removes_the_originals() {
    let env = Env::new().init();
    let (hf, pw) = legacy_files(&env);
    let out = env.ok(
        &[
            "secret",
            "import-legacy",
            "--hf-token-file",
            hf.to_str().unwrap(),
            "--root-password-file",
            pw.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.contains("imported `hf_token`"), "{out}");
    assert!(out.contains("imported `lxc_root_password`"), "{out}");
    assert!(out.contains(&format!("removed {}", hf.display())), "{out}");
    assert!(out.contains(&format!("removed {}", pw.display())), "{out}");
    assert!(!hf.exists() && !pw.exists());
    assert_eq!(env.reveal("hf_token"), TOKEN);
    assert_eq!(env.reveal("lxc_root_password"), PASSWORD);
}

#[test]
fn import_legacy_with_keep_leaves_the_originals() {
    let env = Env::new().init();
    let (hf, pw) = legacy_files(&env);
    let before = (std::fs::read(&hf).unwrap(), std::fs::read(&pw).unwrap());
    let out = env.ok(
        &[
            "secret",
            "import-legacy",
            "--keep",
            "--hf-token-file",
            hf.to_str().unwrap(),
            "--root-password-file",
            pw.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.contains(&format!("kept {}", hf.display())), "{out}");
    assert_eq!(
        (std::fs::read(&hf).unwrap(), std::fs::read(&pw).unwrap()),
        before
    );
    assert_eq!(env.reveal("hf_token"), TOKEN);
    assert_eq!(env.reveal("lxc_root_password"), PASSWORD);
}

#[test]
fn import_legacy_of_a_missing_named_file_exits_2() {
    let env = Env::new().init();
    let (_, pw) = legacy_files(&env);
    let missing = env.root().join("nope.conf");
    let out = env.run(
        &[
            "secret",
            "import-legacy",
            "--hf-token-file",
            missing.to_str().unwrap(),
            "--root-password-file",
            pw.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(&format!("{} does not exist", missing.display())));
    assert!(pw.exists(), "nothing removed after a failure");
    assert!(!env.file("lxc_root_password").exists());
}

#[test]
fn the_age_cli_decrypts_what_phoenix_stores() {
    let env = Env::new().init();
    env.ok(&["secret", "set", "hf_token"], TOKEN.as_bytes());
    let out = age()
        .arg("-d")
        .arg("-i")
        .arg(&env.key)
        .arg(env.file("hf_token"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), TOKEN);
}

#[test]
fn phoenix_decrypts_what_the_age_cli_encrypts() {
    let env = Env::new().init();
    let mut child = age()
        .arg("-r")
        .arg(env.recipient())
        .arg("-o")
        .arg(env.file("from_age"))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(PASSWORD.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(env.reveal("from_age"), PASSWORD);
}

#[test]
fn rotate_key_keeps_every_secret_and_retires_the_old_key() {
    let env = Env::new().init();
    env.ok(&["secret", "set", "hf_token"], TOKEN.as_bytes());
    env.ok(&["secret", "set", "lxc_root_password"], PASSWORD.as_bytes());
    let old_key = env.root().join("old.key");
    std::fs::copy(&env.key, &old_key).unwrap();
    std::fs::set_permissions(&old_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let old_recipient = env.recipient();

    let out = env.ok(&["secret", "rotate-key"], b"");
    assert!(out.contains("re-encrypted 2 secret(s)"), "{out}");
    assert_ne!(env.recipient(), old_recipient);
    assert_eq!(mode(&env.key), 0o600);
    assert_eq!(env.reveal("hf_token"), TOKEN);
    assert_eq!(env.reveal("lxc_root_password"), PASSWORD);

    let refused = env.run_with_key(&old_key, &["secret", "get", "hf_token", "--reveal"], b"");
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused.stderr).contains("is not the key of the store"));
    assert!(!text(&refused.stdout).contains(TOKEN));
    for name in ["hf_token", "lxc_root_password"] {
        let out = age()
            .arg("-d")
            .arg("-i")
            .arg(&old_key)
            .arg(env.file(name))
            .output()
            .unwrap();
        assert!(!out.status.success(), "the old key still opens {name}");
        assert!(
            text(&out.stderr).contains("no identity matched any of the recipients"),
            "{name}: {}",
            text(&out.stderr)
        );
    }
}
