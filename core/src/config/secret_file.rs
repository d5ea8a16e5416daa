//! Secret settings read from files, so that a secret need not sit in a
//! process's command line or environment: a value `file:<path>` (in the
//! file, a variable or a flag), or a variable
//! `STRATA_<SECTION>__<KEY>_FILE` naming the file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use figment::providers::Serialized;
use figment::Figment;

use super::{Config, ConfigError, SECTIONS};

impl Config {
    /// Replaces every secret setting given as `file:<path>` (in the file,
    /// a variable or a flag) by the content of the file at `path`, less one
    /// trailing newline: `hot_store.url`, `sources.<name>.url`,
    /// `api.database_url`, `api.jwt_hs256_secrets.<kid>`, each entry of
    /// `api.page_token_keys` and `object_store.secret_access_key`. A file
    /// that cannot be read is an error naming the setting and the path.
    pub fn resolve_secret_files(&mut self) -> Result<(), ConfigError> {
        if let Some(url) = &mut self.hot_store.url {
            resolve_file_value("hot_store.url", &mut url.0)?;
        }
        if let Some(url) = &mut self.api.database_url {
            resolve_file_value("api.database_url", &mut url.0)?;
        }
        for (name, source) in &mut self.sources {
            resolve_file_value(&format!("sources.{name}.url"), &mut source.url.0)?;
        }
        for (kid, secret) in &mut self.api.jwt_hs256_secrets {
            resolve_file_value(&format!("api.jwt_hs256_secrets.{kid}"), &mut secret.0)?;
        }
        for (i, entry) in self.api.page_token_keys.iter_mut().enumerate() {
            resolve_file_value(&format!("api.page_token_keys[{i}]"), &mut entry.0)?;
        }
        resolve_file_value(
            "object_store.secret_access_key",
            &mut self.object_store.secret_access_key.0,
        )?;
        Ok(())
    }
}

/// `figment` with the values of the `STRATA_<SECTION>__<KEY>_FILE`
/// variables among `env` merged in: each names a file whose content (less
/// one trailing newline) is the value of the secret setting `<KEY>`; for
/// `api.page_token_keys` each non-empty line is one entry.
pub(super) fn merge_file_variables(
    mut figment: Figment,
    env: &[(String, OsString)],
) -> Result<Figment, ConfigError> {
    for variable in file_variables(env)? {
        let text = read_secret_file(&variable.describe(), &variable.path)?;
        figment = if variable.key == "api.page_token_keys" {
            let entries: Vec<String> = text
                .lines()
                .filter(|line| !line.trim().is_empty())
                .map(str::to_string)
                .collect();
            figment.merge(Serialized::default(&variable.key, entries))
        } else {
            figment.merge(Serialized::default(&variable.key, text))
        };
    }
    Ok(figment)
}

/// A setting's value that says where to read it: `file:/run/secrets/x`.
pub const FILE_PREFIX: &str = "file:";

/// Suffix of a variable naming a file that holds a setting's value.
const FILE_SUFFIX: &str = "_file";

/// The settings that may be read from a file (dotted, `*` for any map key).
const SECRET_SETTINGS: &str = "hot_store.url, sources.*.url, api.database_url, \
    api.jwt_hs256_secrets.*, api.page_token_keys, object_store.secret_access_key";

/// Whether the dotted, lowercase `key` names a secret setting.
fn is_secret_setting(key: &str) -> bool {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|part| part.is_empty()) {
        return false;
    }
    matches!(
        parts.as_slice(),
        ["hot_store", "url"]
            | ["sources", _, "url"]
            | ["api", "database_url"]
            | ["api", "jwt_hs256_secrets", _]
            | ["api", "page_token_keys"]
            | ["object_store", "secret_access_key"]
    )
}

/// Whether the dotted, lowercase `key` is one of the schema's own settings
/// (`api.tls_cert_file` is, though it ends with `_file`).
fn is_plain_setting(key: &str) -> bool {
    let pointer = format!("/{}", key.replace('.', "/"));
    serde_json::to_value(Config::default())
        .map(|defaults| defaults.pointer(&pointer).is_some())
        .unwrap_or(false)
}

/// Whether the dotted, lowercase key of a `STRATA_*` variable names a file
/// to read a setting from (`hot_store.url_file`), rather than a setting.
pub(super) fn is_file_variable(key: &str) -> bool {
    key.ends_with(FILE_SUFFIX) && !is_plain_setting(key)
}

/// A `STRATA_<SECTION>__<KEY>_FILE` variable.
#[derive(Debug)]
struct FileVariable {
    /// The variable's name, as set.
    name: String,
    /// The setting it fills, dotted and lowercase (`hot_store.url`).
    key: String,
    /// The file holding the value.
    path: PathBuf,
}

impl FileVariable {
    /// The setting and the variable, for errors.
    fn describe(&self) -> String {
        format!("{} (from {})", self.key, self.name)
    }
}

/// The `_FILE` variables among `env`, checked: each names a secret
/// setting that is not also set directly by its own variable.
fn file_variables(env: &[(String, OsString)]) -> Result<Vec<FileVariable>, ConfigError> {
    const PREFIX: &str = "strata_";
    let mut found = Vec::new();
    for (name, value) in env {
        let name = name.trim();
        let lower = name.to_ascii_lowercase();
        let Some(stripped) = lower.strip_prefix(PREFIX) else {
            continue;
        };
        // As figment's `split("__")` spells it.
        let dotted = stripped.replace("__", ".");
        if !SECTIONS.iter().any(|s| dotted.starts_with(s)) || !is_file_variable(&dotted) {
            continue;
        }
        let key = dotted[..dotted.len() - FILE_SUFFIX.len()].to_string();
        if !is_secret_setting(&key) {
            return Err(ConfigError::Invalid {
                key: name.to_string(),
                message: format!(
                    "names `{key}`, which cannot be read from a file: only secret \
                     settings can ({SECRET_SETTINGS})"
                ),
            });
        }
        // `dotted` ends with "_file", so `name` ends with "_FILE" (any case).
        let direct = &name[..name.len() - FILE_SUFFIX.len()];
        if env
            .iter()
            .any(|(other, _)| other.trim().eq_ignore_ascii_case(direct))
        {
            return Err(ConfigError::Invalid {
                key: name.to_string(),
                message: format!("and {direct} are both set; set only one of them"),
            });
        }
        found.push(FileVariable {
            name: name.to_string(),
            key,
            path: value.into(),
        });
    }
    Ok(found)
}

/// The secret in the file at `path`, less one trailing newline (`\n` or
/// `\r\n`). Errors name `setting` and the path, never the content.
fn read_secret_file(setting: &str, path: &Path) -> Result<String, ConfigError> {
    let mut text = std::fs::read_to_string(path).map_err(|err| ConfigError::Invalid {
        key: setting.to_string(),
        message: format!("cannot read the secret file {}: {err}", path.display()),
    })?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(text)
}

/// `value` replaced by the content of the file it names, when it is
/// `file:<path>`.
fn resolve_file_value(setting: &str, value: &mut String) -> Result<(), ConfigError> {
    if let Some(path) = value.strip_prefix(FILE_PREFIX) {
        *value = read_secret_file(setting, Path::new(path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn secret_file(content: &[u8]) -> tempfile::NamedTempFile {
        use std::io::Write;
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(content).expect("write the temp file");
        file
    }

    fn file_value(file: &tempfile::NamedTempFile) -> String {
        format!("file:{}", file.path().display())
    }

    #[test]
    fn file_values_are_read_from_files() {
        let hot = secret_file(b"postgres://u:Zx9-HOT@db.internal/strata\n");
        let source = secret_file(b"postgres://u:Zx9-SOURCE@db.internal/src");
        let database = secret_file(b"host=db.internal password=Zx9-API\n");
        let jwt = secret_file(b"Zx9-JWT-secret\n\n");
        let page_key = secret_file(b"k1=Zx9-page-token-key\n");
        let aws = secret_file(b"Zx9-AWS\r\n");
        let toml = secret_file(
            format!(
                "[hot_store]\nurl = \"{}\"\n[sources.filetest]\nurl = \"{}\"\n",
                file_value(&hot),
                file_value(&source)
            )
            .as_bytes(),
        );
        let config = Config::load(
            Some(toml.path()),
            &[
                format!("api.database_url={}", file_value(&database)),
                format!("api.jwt_hs256_secrets.k1={}", file_value(&jwt)),
                format!(
                    "api.page_token_keys=[\"{}\", \"k0=inline\"]",
                    file_value(&page_key)
                ),
                format!("object_store.secret_access_key={}", file_value(&aws)),
            ],
        )
        .expect("valid");
        assert_eq!(
            config.hot_store_url().expect("set").expose(),
            "postgres://u:Zx9-HOT@db.internal/strata"
        );
        assert_eq!(
            config.sources["filetest"].url.expose(),
            "postgres://u:Zx9-SOURCE@db.internal/src"
        );
        assert_eq!(
            config.api.database_url.as_ref().expect("set").expose(),
            "host=db.internal password=Zx9-API"
        );
        // One trailing newline goes, not more.
        assert_eq!(
            config.api.jwt_hs256_secrets["k1"].expose(),
            "Zx9-JWT-secret\n"
        );
        let keys: Vec<&str> = config
            .api
            .page_token_keys
            .iter()
            .map(Secret::expose)
            .collect();
        assert_eq!(keys, ["k1=Zx9-page-token-key", "k0=inline"]);
        assert_eq!(config.object_store.secret_access_key.expose(), "Zx9-AWS");
    }

    #[test]
    fn unreadable_secret_files_name_the_setting_and_path_never_the_content() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("no-such-secret");
        let err = Config::load(
            None,
            &[format!(
                "api.jwt_hs256_secrets.k9=file:{}",
                missing.display()
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("api.jwt_hs256_secrets.k9"), "{err}");
        assert!(err.contains(&missing.display().to_string()), "{err}");

        let not_utf8 = secret_file(b"Zx9-NOT-UTF8-\xff\xfe");
        let err = Config::load(None, &[format!("hot_store.url={}", file_value(&not_utf8))])
            .unwrap_err()
            .to_string();
        assert!(err.contains("hot_store.url"), "{err}");
        assert!(
            err.contains(&not_utf8.path().display().to_string()),
            "{err}"
        );
        assert!(!err.contains("Zx9"), "{err}");

        let err = Config::load(
            None,
            &[format!("sources.dirtest.url=file:{}", dir.path().display())],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("sources.dirtest.url"), "{err}");
    }

    /// A synthetic environment for [`Config::load_with_env`]: tests never
    /// set `_FILE` variables in the process, where concurrently running
    /// tests would see them.
    fn env(pairs: &[(&str, &Path)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(name, value)| (OsString::from(name), value.as_os_str().to_os_string()))
            .collect()
    }

    #[test]
    fn file_variables_fill_secret_settings() {
        let hot = secret_file(b"postgres://u:Zx9-HOT-ENV@db.internal/strata\n");
        let source = secret_file(b"postgres://u:Zx9-SOURCE-ENV@db.internal/src\n");
        let database = secret_file(b"postgres://api:Zx9-API-ENV@db.internal/strata\n");
        let jwt = secret_file(b"Zx9-JWT-ENV\n");
        let page_keys = secret_file(b"k2=Zx9-new\n\nk1=Zx9-old\n");
        let aws = secret_file(b"Zx9-AWS-ENV\n");
        let config = Config::load_with_env(
            None,
            &[],
            env(&[
                ("STRATA_HOT_STORE__URL_FILE", hot.path()),
                ("STRATA_SOURCES__FILEVAR__URL_FILE", source.path()),
                ("STRATA_API__DATABASE_URL_FILE", database.path()),
                ("STRATA_API__JWT_HS256_SECRETS__K7_FILE", jwt.path()),
                ("STRATA_API__PAGE_TOKEN_KEYS_FILE", page_keys.path()),
                ("STRATA_OBJECT_STORE__SECRET_ACCESS_KEY_FILE", aws.path()),
                // A setting of its own whose name ends in _FILE: not a file
                // variable (and, being synthetic, not read by figment).
                (
                    "STRATA_API__TLS_CERT_FILE",
                    Path::new("/etc/strata/cert.pem"),
                ),
                ("STRATA_CONFIG_FILE", Path::new("/not/a/setting")),
                ("UNRELATED_FILE", Path::new("/nowhere")),
            ]),
        )
        .expect("valid");
        assert_eq!(
            config.hot_store_url().expect("set").expose(),
            "postgres://u:Zx9-HOT-ENV@db.internal/strata"
        );
        assert_eq!(
            config.sources["filevar"].url.expose(),
            "postgres://u:Zx9-SOURCE-ENV@db.internal/src"
        );
        assert_eq!(
            config.api.database_url.as_ref().expect("set").expose(),
            "postgres://api:Zx9-API-ENV@db.internal/strata"
        );
        assert_eq!(config.api.jwt_hs256_secrets["k7"].expose(), "Zx9-JWT-ENV");
        let keys: Vec<&str> = config
            .api
            .page_token_keys
            .iter()
            .map(Secret::expose)
            .collect();
        assert_eq!(keys, ["k2=Zx9-new", "k1=Zx9-old"]);
        assert_eq!(
            config.object_store.secret_access_key.expose(),
            "Zx9-AWS-ENV"
        );

        // `--set` still wins over the environment.
        let config = Config::load_with_env(
            None,
            &["api.jwt_hs256_secrets.k7=from-the-flag".into()],
            env(&[("STRATA_API__JWT_HS256_SECRETS__K7_FILE", jwt.path())]),
        )
        .expect("valid");
        assert_eq!(config.api.jwt_hs256_secrets["k7"].expose(), "from-the-flag");
    }

    #[test]
    fn bad_file_variables_are_named() {
        let file = secret_file(b"500\n");
        for name in [
            "STRATA_RELAY__BATCH_SIZE_FILE",
            "STRATA_API__NO_SUCH_FILE",
            "STRATA_LOG__FORMAT_FILE",
        ] {
            let err = Config::load_with_env(None, &[], env(&[(name, file.path())]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{err}");
        }

        let err = Config::load_with_env(
            None,
            &[],
            env(&[
                ("STRATA_API__JWT_HS256_SECRETS__K8", Path::new("direct")),
                ("STRATA_API__JWT_HS256_SECRETS__K8_FILE", file.path()),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("STRATA_API__JWT_HS256_SECRETS__K8_FILE"),
            "{err}"
        );

        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("hot_url");
        let err = Config::load_with_env(
            None,
            &[],
            env(&[("STRATA_HOT_STORE__URL_FILE", missing.as_path())]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("hot_store.url"), "{err}");
        assert!(err.contains("STRATA_HOT_STORE__URL_FILE"), "{err}");
        assert!(err.contains(&missing.display().to_string()), "{err}");
    }

    #[test]
    fn file_variable_names() {
        assert!(is_file_variable("hot_store.url_file"));
        assert!(is_file_variable("sources.x.url_file"));
        assert!(!is_file_variable("api.tls_cert_file"));
        assert!(!is_file_variable("api.tls_key_file"));
        assert!(!is_file_variable("hot_store.url"));
        assert!(is_secret_setting("api.jwt_hs256_secrets.k1"));
        assert!(!is_secret_setting("api.jwt_hs256_secrets"));
        assert!(!is_secret_setting("sources..url"));
        assert!(!is_secret_setting("relay.batch_size"));
    }
}
