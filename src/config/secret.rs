//! Secret files (`password_file`, `token_file`, `config_hmac_key_file`), read the one
//! way SPEC section 8 fixes: the whole file, with one trailing newline (`\n` or
//! `\r\n`) removed, so a file written by `echo` and one written by `printf` hold the
//! same secret. The contents are never logged or printed.

use std::path::Path;

/// The secret in `path`.
pub fn read_secret_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = std::fs::read(path)?;
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(bytes.len() - 2);
    } else if bytes.ends_with(b"\n") {
        bytes.truncate(bytes.len() - 1);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        for (content, expected) in [
            (&b"s3cret\n"[..], &b"s3cret"[..]),
            (b"s3cret\r\n", b"s3cret"),
            (b"s3cret", b"s3cret"),
            (b"s3cret\n\n", b"s3cret\n"),
            (b" s3cret \t", b" s3cret \t"),
            (b"\n", b""),
        ] {
            std::fs::write(&path, content).unwrap();
            assert_eq!(read_secret_file(&path).unwrap(), expected, "{content:?}");
        }
        assert!(read_secret_file(&dir.path().join("absent")).is_err());
    }
}
