//! Fetching inside an emulated container: `curl` (from the `curl` package) and `gpg
//! --dearmor` (from `gnupg`), enough for NVIDIA's install guide of the container toolkit and
//! for downloading the driver's `.run` installer.
//!
//! The emulated internet serves four things: Docker's repository key
//! (`https://download.docker.com/linux/ubuntu/gpg`), NVIDIA's repository key
//! (`https://nvidia.github.io/libnvidia-container/gpgkey`), its list file
//! (`…/stable/deb/nvidia-container-toolkit.list`) and the driver installer of the host's
//! version under `https://us.download.nvidia.com/tesla/<version>/` (where NVIDIA publishes
//! data center drivers). Anything else is a 404. With the root's `ct_network` set to
//! `archive-only`, no host but Ubuntu's archive resolves: curl exits 6 ("Could not resolve
//! host"), as in a container without internet.
//!
//! curl (8.5, Ubuntu 24.04): `-f/--fail` turns an HTTP error into exit 22 ("The requested URL
//! returned error: 404"), `-s` hides error messages unless `-S` shows them again, `-L`,
//! `--retry N`, `-o FILE` (created 0644 under the usual umask). gpg (2.4): `--dearmor` with
//! `-o/--output`, input from a file or stdin; an existing output needs `--yes`, and in
//! `--batch` mode it cannot ask ("Sorry, we are in batchmode - can't get input", exit 2).

use crate::apt::{DOCKER_GPGKEY, DOCKER_KEYRING, NVIDIA_GPGKEY, NVIDIA_KEYRING};
use crate::inner::Ct;
use crate::out::Out;
use crate::root::CtNetwork;

/// What the emulated internet answers for `url`: `Ok(body)` or `Err(status)`.
fn serve(ct: &Ct<'_>, url: &str) -> Result<String, u16> {
    if url == "https://nvidia.github.io/libnvidia-container/gpgkey" {
        return Ok(NVIDIA_GPGKEY.to_owned());
    }
    // Docker's install guide for Ubuntu (docs.docker.com/engine/install/ubuntu/).
    if url == "https://download.docker.com/linux/ubuntu/gpg" {
        return Ok(DOCKER_GPGKEY.to_owned());
    }
    if url
        == "https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list"
    {
        return Ok("deb https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /\n#deb https://nvidia.github.io/libnvidia-container/experimental/deb/$(ARCH) /\n".to_owned());
    }
    let driver = crate::nvidia::gpus(&ct.root.settings)
        .first()
        .map(|g| g.driver.clone())
        .unwrap_or_else(|| "580.159.04".to_owned());
    if url
        == format!("https://us.download.nvidia.com/tesla/{driver}/NVIDIA-Linux-x86_64-{driver}.run")
    {
        return Ok(format!("{}{driver}\n", crate::nvctk::INSTALLER_MAGIC));
    }
    Err(404)
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', ':']).next().unwrap_or(rest)
}

/// `curl [options] URL`.
pub fn curl(ct: &Ct<'_>, args: &[String], _stdin: &[u8], out: &mut Out) -> i32 {
    let (mut fail, mut silent, mut show) = (false, false, false);
    let mut output: Option<String> = None;
    let mut url: Option<String> = None;
    let mut it = args.iter();
    let unknown = |out: &mut Out, o: &str| {
        out.err(format!(
            "curl: option {o}: is unknown\ncurl: try 'curl --help' or 'curl --manual' for more information\n"
        ));
        2
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--fail" => fail = true,
            "--silent" => silent = true,
            "--show-error" => show = true,
            "--location" => {}
            "-o" | "--output" => output = it.next().cloned(),
            "--retry" => {
                if it.next().and_then(|n| n.parse::<u32>().ok()).is_none() {
                    out.err("curl: option --retry: expected a proper numerical parameter\n");
                    return 2;
                }
            }
            s if s.starts_with("--") => return unknown(out, s),
            s if s.starts_with('-') && s.len() > 1 => {
                let flags: Vec<char> = s[1..].chars().collect();
                for (i, c) in flags.iter().enumerate() {
                    match c {
                        'f' => fail = true,
                        's' => silent = true,
                        'S' => show = true,
                        'L' => {}
                        'o' if i + 1 == flags.len() => output = it.next().cloned(),
                        _ => return unknown(out, s),
                    }
                }
            }
            s => url = Some(s.to_owned()),
        }
    }
    let Some(url) = url else {
        out.err("curl: no URL specified\ncurl: try 'curl --help' or 'curl --manual' for more information\n");
        return 2;
    };
    let say = |out: &mut Out, m: String| {
        if !silent || show {
            out.err(m);
        }
    };
    let host = host_of(&url);
    let reachable = ct.root.settings.ct_network == CtNetwork::Internet
        || matches!(host, "archive.ubuntu.com" | "security.ubuntu.com");
    if !reachable {
        say(out, format!("curl: (6) Could not resolve host: {host}\n"));
        return 6;
    }
    let body = match serve(ct, &url) {
        Ok(b) => b,
        Err(status) if fail => {
            say(
                out,
                format!("curl: (22) The requested URL returned error: {status}\n"),
            );
            return 22;
        }
        Err(status) => format!("<html><body><h1>{status} Not Found</h1></body></html>\n"),
    };
    match output {
        Some(path) => match crate::apt::write_file(ct, &path, 0o644, &body) {
            Ok(()) => 0,
            Err(e) => {
                say(
                    out,
                    format!("curl: (23) Failure writing output to destination, {path}: {e}\n"),
                );
                23
            }
        },
        None => {
            out.out(body);
            0
        }
    }
}

/// `gpg [--batch] [--yes] --dearmor [-o FILE] [INPUT]`.
pub fn gpg(ct: &Ct<'_>, args: &[String], stdin: &[u8], out: &mut Out) -> i32 {
    let (mut batch, mut yes, mut dearmor) = (false, false, false);
    let mut output: Option<String> = None;
    let mut input: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--batch" => batch = true,
            "--yes" => yes = true,
            "--dearmor" | "--dearmour" => dearmor = true,
            "-o" | "--output" => output = it.next().cloned(),
            s if s.starts_with('-') => {
                out.err(format!("gpg: invalid option \"{s}\"\n"));
                return 2;
            }
            s => input = Some(s.to_owned()),
        }
    }
    if !dearmor {
        out.err("phoenix-emu: only `gpg --dearmor` is emulated\n");
        return 2;
    }
    let data = match &input {
        Some(p) => match std::fs::read(ct.path(p)) {
            Ok(d) => d,
            Err(_) => {
                out.err(format!(
                    "gpg: can't open '{p}': No such file or directory\n"
                ));
                return 2;
            }
        },
        None => stdin.to_vec(),
    };
    let text = String::from_utf8_lossy(&data);
    let dearmored = if text == NVIDIA_GPGKEY {
        NVIDIA_KEYRING.to_owned()
    } else if text == DOCKER_GPGKEY {
        DOCKER_KEYRING.to_owned()
    } else if text.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
        "phoenix-emu keyring (another key)\n".to_owned()
    } else {
        out.err("gpg: no valid OpenPGP data found.\n");
        return 2;
    };
    let Some(path) = output else {
        out.out(dearmored);
        return 0;
    };
    if ct.path(&path).exists() && !yes {
        out.err(if batch {
            "gpg: Sorry, we are in batchmode - can't get input\n".to_owned()
        } else {
            "gpg: cannot open '/dev/tty': No such device or address\n".to_owned()
        });
        return 2;
    }
    match crate::apt::write_file(ct, &path, 0o644, &dearmored) {
        Ok(()) => 0,
        Err(e) => {
            out.err(format!("gpg: can't create '{path}': {e}\n"));
            2
        }
    }
}
