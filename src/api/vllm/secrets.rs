//! How secrets reach the vLLM server, so that no argv, environment of `pct exec`, log line
//! or journal entry holds them (DESIGN.md §1, §10, §11):
//! - the API key: `VLLM_API_KEY=<key>` in a 0600 root-owned env file inside the container,
//!   passed with `docker run --env-file`. vLLM reads `VLLM_API_KEY` from its environment and
//!   its start-up "non-default args" line does not show it, while a key given with
//!   `--api-key` or in a `--config` YAML is printed there (vllm-project/vllm
//!   `vllm/entrypoints/utils.py` `log_non_default_args`, v0.11.0; fixed upstream only by
//!   PR #52523). Docker keeps the container's environment in its own root-only config
//!   (`/var/lib/docker/containers/<id>/config.v2.json`, 0600);
//! - the Hugging Face token: the 0600 file `token` in the Hugging Face cache that is bound
//!   into the vLLM container (where `huggingface_hub` reads it), never an environment
//!   variable (`docker inspect` would show it).

use zeroize::Zeroizing;

use super::{ServerSpec, VllmError};

impl ServerSpec {
    /// The API key's env file (`VLLM_API_KEY=<key>` and a newline), or `None` without a
    /// key. Docker's env-file parser (docker/cli `opts/parse.go` `parseKeyValueFile`) takes
    /// each line's value verbatim after the first `=`, so the key only has to be one line
    /// of UTF-8 without control characters.
    pub fn env_file(&self) -> Result<Option<Zeroizing<Vec<u8>>>, VllmError> {
        let Some(key) = &self.api_key else {
            return Ok(None);
        };
        let bytes = key.expose();
        let text = std::str::from_utf8(bytes).map_err(|_| VllmError::Spec {
            field: "api_key",
            message: format!("{key} is not UTF-8 text"),
        })?;
        if text.is_empty() || text.chars().any(char::is_control) {
            return Err(VllmError::Spec {
                field: "api_key",
                message: format!("{key} is empty or contains a control character"),
            });
        }
        // An HTTP header value loses leading and trailing whitespace (RFC 9110 §5.5), so
        // such a key could never be presented.
        if text.trim() != text {
            return Err(VllmError::Spec {
                field: "api_key",
                message: format!("{key} begins or ends with whitespace"),
            });
        }
        let mut out = Zeroizing::new(Vec::with_capacity(bytes.len() + 16));
        out.extend_from_slice(b"VLLM_API_KEY=");
        out.extend_from_slice(bytes);
        out.push(b'\n');
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    #[test]
    fn api_key_env_file_is_one_verbatim_line() {
        let mut s = example_spec();
        s.api_key = Some(secret("vllm_api_key", "k\"e\\y =x"));
        let y = s.env_file().unwrap().unwrap();
        assert_eq!(y.as_slice(), b"VLLM_API_KEY=k\"e\\y =x\n");
        s.api_key = Some(secret("vllm_api_key", "key "));
        assert_eq!(
            s.env_file().unwrap_err().to_string(),
            "`api_key`: «secret:vllm_api_key» begins or ends with whitespace"
        );
        for bad in ["a\nb", "a\rb", "a\0b", ""] {
            s.api_key = Some(secret("vllm_api_key", bad));
            let e = s.env_file().unwrap_err().to_string();
            assert_eq!(
                e,
                "`api_key`: «secret:vllm_api_key» is empty or contains a control character"
            );
        }
        s.api_key = None;
        assert!(s.env_file().unwrap().is_none());
    }

    #[test]
    fn token_lives_in_the_cache_on_the_dataset() {
        let mut s = example_spec();
        assert_eq!(s.hf_cache_dir().as_str(), "/models/huggingface");
        assert_eq!(s.token_path().as_str(), "/models/huggingface/token");
        s.models_dir = None;
        assert_eq!(s.hf_cache_dir().as_str(), "/root/.cache/huggingface");
        assert_eq!(s.token_path().as_str(), "/root/.cache/huggingface/token");
    }
}
