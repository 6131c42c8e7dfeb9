//! The control plane's certificates and keys, made fresh for each one: a CA, kube-apiserver's
//! serving certificate for 127.0.0.1, the admin's client certificate (group `system:masters`)
//! and the service-account signing key. All ECDSA P-256, which takes milliseconds.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::Error;

/// The files, in one folder.
pub(super) struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Generates everything into `dir`, which is created.
    pub(super) fn generate(dir: &Path) -> Result<Self, Error> {
        fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let pki = Self {
            dir: dir.to_owned(),
        };

        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, "weir-e2e-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        pki.write("ca.crt", &ca.self_signed(&ca_key)?.pem())?;
        let ca = Issuer::new(ca, ca_key);

        let mut server =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        server
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server.use_authority_key_identifier_extension = true;
        let server_key = KeyPair::generate()?;
        pki.write("apiserver.crt", &server.signed_by(&server_key, &ca)?.pem())?;
        pki.write("apiserver.key", &server_key.serialize_pem())?;

        // kube-apiserver reads the user from the common name and groups from organizations.
        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin
            .distinguished_name
            .push(DnType::CommonName, "weir-e2e-admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        admin.use_authority_key_identifier_extension = true;
        let admin_key = KeyPair::generate()?;
        pki.write("admin.crt", &admin.signed_by(&admin_key, &ca)?.pem())?;
        pki.write("admin.key", &admin_key.serialize_pem())?;

        let service_accounts = KeyPair::generate()?;
        pki.write("sa.key", &service_accounts.serialize_pem())?;
        pki.write("sa.pub", &service_accounts.public_key_pem())?;
        Ok(pki)
    }

    /// The path of one of the files: `ca.crt`, `apiserver.crt`, `apiserver.key`, `admin.crt`,
    /// `admin.key`, `sa.key` (service-account signing key) or `sa.pub`.
    pub(super) fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn write(&self, file: &str, pem: &str) -> Result<(), Error> {
        let path = self.path(file);
        fs::write(&path, pem).map_err(Error::io(format!("writing {}", path.display())))
    }
}
