//! The public server's TLS: a private CA made on first use, and a server certificate it signs
//! for every name and address the server is reached by. Everything is kept in `tls/` in the
//! data directory, readable by its owner only. A joined machine pins the CA (it learns it
//! through the invite's sealed channel), so no public CA is involved and nothing is trusted on
//! first sight.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use async_nats::rustls::pki_types::pem::PemObject as _;
use async_nats::rustls::pki_types::CertificateDer;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::protocol::join::sha256_hex;

/// How long the CA and the server certificate are valid.
const CA_YEARS: i64 = 20;
const CERT_DAYS: i64 = 825;

/// The files of a server's TLS identity.
#[derive(Debug, Clone)]
pub(crate) struct ServerTls {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    /// The CA a client pins.
    pub(crate) ca: PathBuf,
}

impl ServerTls {
    /// SHA-256 (hex) of the first certificate in the server's chain: what a client is shown.
    pub(crate) fn cert_sha256(&self) -> anyhow::Result<String> {
        let der = CertificateDer::from_pem_file(&self.cert)
            .with_context(|| format!("cannot read the certificate {}", self.cert.display()))?;
        Ok(sha256_hex(der.as_ref()))
    }

    pub(crate) fn ca_pem(&self) -> anyhow::Result<String> {
        std::fs::read_to_string(&self.ca)
            .with_context(|| format!("cannot read the CA {}", self.ca.display()))
    }
}

/// skypipe's own CA and server certificate in `dir` for these names (host names and
/// addresses), made or renewed as needed: the CA once, the certificate whenever the names
/// change or it has less than a month left.
pub(crate) fn ensure(dir: &Path, names: &[String]) -> anyhow::Result<ServerTls> {
    crate::paths::private_dir(dir)?;
    let tls = ServerTls {
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
        ca: dir.join("ca.pem"),
    };
    let ca_key_path = dir.join("ca-key.pem");
    let ca_name_path = dir.join("ca-name");
    if !tls.ca.exists() || !ca_key_path.exists() {
        let key = KeyPair::generate().context("cannot make a CA key")?;
        let name = format!("skypipe CA {}", &sha256_hex(key.public_key_raw())[..12]);
        let cert = ca_params(&name)?
            .self_signed(&key)
            .context("cannot make the CA")?;
        write(&ca_key_path, &key.serialize_pem())?;
        write(&ca_name_path, &name)?;
        write(&tls.ca, &cert.pem())?;
        // A new CA: the old certificate is not signed by it.
        let _ = std::fs::remove_file(&tls.cert);
    }
    let names_path = dir.join("server-names");
    let wanted = names.join("\n");
    let fresh = std::fs::read_to_string(&names_path).is_ok_and(|n| n == wanted)
        && tls.cert.exists()
        && tls.key.exists()
        && std::fs::metadata(&tls.cert)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() < (CERT_DAYS as u64 - 30) * 86_400);
    if fresh {
        return Ok(tls);
    }
    let ca_key = KeyPair::from_pem(&read(&ca_key_path)?)
        .with_context(|| format!("cannot read the CA key {}", ca_key_path.display()))?;
    let ca_name = read(&ca_name_path)?;
    let issuer = Issuer::new(ca_params(ca_name.trim())?, ca_key);
    let mut params = CertificateParams::new(names.to_vec())
        .with_context(|| format!("cannot put these names in a certificate ({wanted:?})"))?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = time_now();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(CERT_DAYS);
    let key = KeyPair::generate().context("cannot make a server key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("cannot sign the server certificate")?;
    write(&tls.key, &key.serialize_pem())?;
    write(&tls.cert, &cert.pem())?;
    write(&names_path, &wanted)?;
    Ok(tls)
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn ca_params(name: &str) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new()).context("cannot make the CA")?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time_now();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(CA_YEARS * 365);
    Ok(params)
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    skypipe_nats::write_private(path, text)
        .with_context(|| format!("cannot write {}", path.display()))
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The names a public server's certificate carries for a listen address: loopback, this
/// machine's host name and, when it listens everywhere, each of its addresses (else the one it
/// listens on), then the names given.
pub(crate) fn names_for(listen: IpAddr, extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = extra.to_vec();
    if let Some(host) = host_name() {
        names.push(host);
    }
    names.extend(["localhost".to_string(), "127.0.0.1".into(), "::1".into()]);
    if listen.is_unspecified() {
        names.extend(interface_addresses().iter().map(IpAddr::to_string));
    } else {
        names.push(listen.to_string());
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| !n.is_empty() && seen.insert(n.clone()));
    names
}

/// This machine's host name, when it has a usable one.
pub(crate) fn host_name() -> Option<String> {
    let name = nix::unistd::gethostname().ok()?.into_string().ok()?;
    let name = name.trim().to_string();
    (!name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
    .then_some(name)
}

/// The addresses of this machine's network interfaces (IPv6 link-local ones left out: they
/// need a zone to be dialled).
pub(crate) fn interface_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for a in addrs {
        let Some(addr) = a.address else { continue };
        if let Some(v4) = addr.as_sockaddr_in() {
            out.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            let ip = v6.ip();
            if ip.segments()[0] & 0xffc0 != 0xfe80 {
                out.push(IpAddr::V6(ip));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}
