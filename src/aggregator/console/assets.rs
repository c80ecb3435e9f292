//! The console's static files, embedded in the binary: its own stylesheet and script, and
//! the vendored libraries (htmx, uPlot, Cytoscape.js) that `scripts/vendor-js.sh` took from
//! npm at pinned versions (see `static/vendor/MANIFEST`). Nothing is fetched at run time.
//! Each file is served under a digest of its content, so it can be cached for good.

use std::sync::OnceLock;

use ring::digest;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("static/app.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("static/app.js"),
    },
    Asset {
        name: "htmx.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("static/vendor/htmx.min.js"),
    },
    Asset {
        name: "uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("static/vendor/uPlot.iife.min.js"),
    },
    Asset {
        name: "uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("static/vendor/uPlot.min.css"),
    },
    Asset {
        name: "cytoscape.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("static/vendor/cytoscape.min.js"),
    },
];

/// The vendored files' pins, written by `scripts/vendor-js.sh`.
pub const MANIFEST: &str = include_str!("static/vendor/MANIFEST");

fn digests() -> &'static Vec<String> {
    static DIGESTS: OnceLock<Vec<String>> = OnceLock::new();
    DIGESTS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| hex(&digest::digest(&digest::SHA256, a.body).as_ref()[..8]))
            .collect()
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The URL of an embedded file (its digest in the path).
pub fn url(name: &str) -> String {
    match ASSETS.iter().position(|a| a.name == name) {
        Some(i) => format!("/static/{}/{}", digests()[i], name),
        None => format!("/static/missing/{name}"),
    }
}

/// The file at `/static/{digest}/{name}`: its content type and bytes.
pub fn get(digest: &str, name: &str) -> Option<(&'static str, &'static [u8])> {
    let i = ASSETS.iter().position(|a| a.name == name)?;
    (digests()[i] == digest).then(|| (ASSETS[i].content_type, ASSETS[i].body))
}

/// Bytes of the named file (for page-weight accounting).
pub fn size(name: &str) -> usize {
    ASSETS
        .iter()
        .find(|a| a.name == name)
        .map_or(0, |a| a.body.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendored_files_match_their_pins_and_carry_licences() {
        let mut checked = 0;
        for line in MANIFEST.lines().filter(|l| !l.starts_with('#')) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [package, version, licence, sha256, file] = fields[..] else {
                panic!("malformed MANIFEST line {line:?}");
            };
            let asset = ASSETS
                .iter()
                .find(|a| a.name == file)
                .unwrap_or_else(|| panic!("{file} pinned but not embedded"));
            assert_eq!(
                hex(digest::digest(&digest::SHA256, asset.body).as_ref()),
                sha256,
                "{file} differs from {package}@{version}: run scripts/vendor-js.sh, never edit it"
            );
            assert!(["MIT", "0BSD"].contains(&licence), "{package}: {licence}");
            let licence_file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/aggregator/console/static/vendor")
                .join(format!("{package}.LICENSE"));
            assert!(licence_file.exists(), "{} missing", licence_file.display());
            checked += 1;
        }
        assert_eq!(checked, 4);
    }

    #[test]
    fn files_are_served_only_under_their_digest() {
        let u = url("app.css");
        let (_, rest) = u.split_at("/static/".len());
        let (d, name) = rest.split_once('/').expect("digest/name");
        assert!(get(d, name).is_some());
        assert!(get("0000000000000000", name).is_none());
        assert!(get(d, "../Cargo.toml").is_none());
    }
}
