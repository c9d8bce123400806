//! The local files behind the TLS and auth settings, read and sanity-checked before any
//! connection is made, so a wrong path or a swapped cert and key is reported by the setting's
//! name instead of as a TLS handshake failure later.

use std::path::{Path, PathBuf};

use etcd_client::{Certificate, Identity, TlsOptions};

use super::{ConnectError, EtcdOptions};

/// The TLS options, or `None` for plain `http://` without any TLS file set.
pub(super) fn tls(options: &EtcdOptions) -> Result<Option<TlsOptions>, ConnectError> {
    let names = options.names;
    let https = options
        .endpoints
        .iter()
        .filter(|e| e.starts_with("https://"))
        .count();
    let any_file = options.ca_file.is_some() || options.cert_file.is_some();
    if https == 0 && !any_file {
        return Ok(None);
    }
    if https != options.endpoints.len() {
        // etcd-client uses one TLS setting for all endpoints and refuses TLS for http:// URLs.
        let what = if https == 0 {
            format!("{} or {} is set", names.ca_file, names.cert_file)
        } else {
            "some endpoints are https://".to_owned()
        };
        return Err(ConnectError::Settings(format!(
            "{what}, so every etcd endpoint must be https:// (got {})",
            options.endpoints.join(", ")
        )));
    }
    let mut tls = TlsOptions::new();
    if let Some(ca) = &options.ca_file {
        let pem = read(ca, names.ca_file)?;
        require_pem(&pem, ca, names.ca_file, "CERTIFICATE", "a PEM certificate")?;
        tls = tls.ca_certificate(Certificate::from_pem(pem));
    }
    match (&options.cert_file, &options.key_file) {
        (Some(cert), Some(key)) => {
            let cert_pem = read(cert, names.cert_file)?;
            require_pem(
                &cert_pem,
                cert,
                names.cert_file,
                "CERTIFICATE",
                "a PEM certificate",
            )?;
            let key_pem = read(key, names.key_file)?;
            require_pem(
                &key_pem,
                key,
                names.key_file,
                "PRIVATE KEY",
                "a PEM private key",
            )?;
            tls = tls.identity(Identity::from_pem(cert_pem, key_pem));
        }
        (None, None) => {}
        (Some(_), None) => {
            return Err(ConnectError::Settings(format!(
                "{} is set without {}: set both or neither",
                names.cert_file, names.key_file
            )));
        }
        (None, Some(_)) => {
            return Err(ConnectError::Settings(format!(
                "{} is set without {}: set both or neither",
                names.key_file, names.cert_file
            )));
        }
    }
    Ok(Some(tls))
}

/// The password for the configured user: the password file's content without trailing
/// whitespace (the newline an editor or `echo` adds is not part of it).
pub(super) fn password(options: &EtcdOptions) -> Result<String, ConnectError> {
    let names = options.names;
    let Some(path) = &options.password_file else {
        return Err(ConnectError::Settings(format!(
            "{} is set without {}: set both",
            names.username, names.password_file
        )));
    };
    let password = read(path, names.password_file)?.trim_end().to_owned();
    if password.is_empty() {
        return Err(ConnectError::File {
            what: names.password_file,
            path: path.clone(),
            reason: "the file is empty".into(),
        });
    }
    Ok(password)
}

fn read(path: &Path, what: &'static str) -> Result<String, ConnectError> {
    std::fs::read_to_string(path).map_err(|e| ConnectError::File {
        what,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// A PEM block whose label ends with `label` (`PRIVATE KEY` matches `RSA PRIVATE KEY` and
/// `EC PRIVATE KEY` too).
fn require_pem(
    pem: &str,
    path: &Path,
    what: &'static str,
    label: &str,
    expected: &str,
) -> Result<(), ConnectError> {
    let found = pem
        .lines()
        .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{label}-----")));
    if found {
        return Ok(());
    }
    Err(ConnectError::File {
        what,
        path: PathBuf::from(path),
        reason: format!("does not contain {expected} (-----BEGIN …{label}-----)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n";

    fn https(dir: &Path) -> EtcdOptions {
        EtcdOptions {
            ca_file: Some(write(dir, "ca.pem", CERT)),
            cert_file: Some(write(dir, "c.pem", CERT)),
            key_file: Some(write(dir, "k.pem", KEY)),
            ..EtcdOptions::with_endpoints(vec!["https://etcd:2379".into()])
        }
    }

    fn error(o: &EtcdOptions) -> String {
        match tls(o) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn plain_http_without_files_is_no_tls() {
        let o = EtcdOptions::with_endpoints(vec!["http://a:2379".into()]);
        assert!(tls(&o).expect("no error").is_none());
    }

    #[test]
    fn good_files_give_tls() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(tls(&https(dir.path())).expect("no error").is_some());
    }

    #[test]
    fn a_missing_file_is_named_by_its_setting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = https(dir.path());
        o.ca_file = Some(dir.path().join("nope.pem"));
        let e = error(&o);
        assert!(e.starts_with("etcd.ca_file "), "{e}");
        assert!(e.contains("nope.pem"), "{e}");
    }

    #[test]
    fn a_key_in_place_of_a_cert_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = https(dir.path());
        o.cert_file = o.key_file.clone();
        let e = error(&o);
        assert!(e.starts_with("etcd.cert_file "), "{e}");
        assert!(e.contains("PEM certificate"), "{e}");
    }

    #[test]
    fn a_cert_without_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = https(dir.path());
        o.key_file = None;
        assert!(error(&o).contains("etcd.cert_file is set without etcd.key_file"));
    }

    #[test]
    fn tls_files_need_https_endpoints() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = https(dir.path());
        o.endpoints = vec!["http://etcd:2379".into()];
        let e = error(&o);
        assert!(e.contains("must be https://"), "{e}");
    }

    #[test]
    fn passwords_lose_trailing_whitespace_and_must_not_be_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut o = EtcdOptions::with_endpoints(vec!["http://a:2379".into()]);
        o.username = Some("web-01".into());
        o.password_file = Some(write(dir.path(), "pw", "s3cret\n"));
        assert_eq!(password(&o).expect("a password"), "s3cret");
        o.password_file = Some(write(dir.path(), "empty", "\n"));
        let e = password(&o).expect_err("an error").to_string();
        assert!(
            e.starts_with("etcd.password_file ") && e.contains("empty"),
            "{e}"
        );
        o.password_file = None;
        let e = password(&o).expect_err("an error").to_string();
        assert!(
            e.contains("etcd.username is set without etcd.password_file"),
            "{e}"
        );
    }
}
