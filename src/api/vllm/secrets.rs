//! How secrets reach the vLLM server: the API key in a 0600 file inside the container,
//! the Hugging Face token as the file `token` in the mounted Hugging Face cache.

use zeroize::Zeroizing;

use super::{ServerSpec, VllmError};

impl ServerSpec {
    /// The API key file's content (`api-key: "…"`), or `None` without a key.
    pub fn config_yaml(&self) -> Result<Option<Zeroizing<Vec<u8>>>, VllmError> {
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
        let mut out = Zeroizing::new(Vec::with_capacity(bytes.len() + 16));
        out.extend_from_slice(b"api-key: \"");
        for b in text.bytes() {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.extend_from_slice(b"\"\n");
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;

    #[test]
    fn api_key_yaml_is_quoted() {
        let mut s = example_spec();
        s.api_key = Some(secret("vllm_api_key", "k\"e\\y"));
        let y = s.config_yaml().unwrap().unwrap();
        assert_eq!(y.as_slice(), b"api-key: \"k\\\"e\\\\y\"\n");
        s.api_key = Some(secret("vllm_api_key", "a\nb"));
        let e = s.config_yaml().unwrap_err().to_string();
        assert!(
            e.contains("«secret:vllm_api_key»") && !e.contains("a\nb"),
            "{e}"
        );
        s.api_key = None;
        assert!(s.config_yaml().unwrap().is_none());
    }
}
