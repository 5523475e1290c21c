//! `streamcache hash-password`: the `[[mount.user]]` lines for a player.
//!
//! The password is read from standard input, so that it never shows in the
//! process list or the shell history, and is never printed: only its HA1
//! secrets, `H(user:realm:password)` for MD5 and SHA-256.

use std::io::BufRead as _;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use streamcache_rtsp::auth::{ha1, DigestAlgorithm};

use crate::config::{Config, DEFAULT_REALM};

pub fn run(realm: &str, user: &str) -> anyhow::Result<ExitCode> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        bail!("no password on standard input (e.g. `echo 'secret' | streamcache hash-password {user}`)");
    }
    let text = user_lines(realm, user, password);
    // Check the name and realm as the daemon will, before anyone pastes them.
    let check = format!(
        "[[mount]]\npath = \"/x\"\norigin = \"rtsp://h/\"\nrealm = {}\n{text}",
        toml_string(realm)
    );
    if let Err(problems) = Config::parse(&check) {
        let why: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        bail!("cannot make a user: {}", why.join("; "));
    }
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// The lines for one user, to paste under the mount's `[[mount]]`.
fn user_lines(realm: &str, user: &str, password: &str) -> String {
    let mut text = String::new();
    if realm != DEFAULT_REALM {
        text += &format!("# for the mount's realm = {}\n", toml_string(realm));
    }
    text += &format!(
        "[[mount.user]]\nname = {}\nmd5 = \"{}\"\nsha256 = \"{}\"\n",
        toml_string(user),
        ha1(DigestAlgorithm::Md5, user, realm, password),
        ha1(DigestAlgorithm::Sha256, user, realm, password),
    );
    text
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_and_hold_the_rfc_ha1() {
        // RFC 7616 §3.9.1's user: HA1 = MD5("Mufasa:http-auth@example.org:Circle of Life").
        let text = user_lines("http-auth@example.org", "Mufasa", "Circle of Life");
        assert!(text.starts_with("# for the mount's realm = \"http-auth@example.org\"\n"));
        let config = Config::parse(&format!(
            "[[mount]]\npath = \"/x\"\norigin = \"rtsp://h/\"\nrealm = \"http-auth@example.org\"\n{text}"
        ))
        .expect("hash-password output is valid config");
        let user = &config.mounts[0].users[0];
        assert_eq!(user.name.get_ref(), "Mufasa");
        assert_eq!(
            user.md5.as_ref().unwrap().get_ref(),
            "3d78807defe7de2157e2b0b6573a855f"
        );
        assert!(!text.contains("Circle"));
        assert!(!user_lines(DEFAULT_REALM, "a", "b").contains("realm"));
    }
}
