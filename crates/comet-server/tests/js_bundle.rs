//! The embedded browser client: `/comet.js` and `/comet.mjs` are served with a strong ETag and
//! answer `304` to a matching `If-None-Match`, and the committed bundle was built from the sources
//! next to it (`clients/js/dist/SOURCES`, checked here without Node; `npm run check-dist`, run by
//! `scripts/test`, rebuilds and compares byte for byte).

use comet_test_support as support;

use std::path::{Path, PathBuf};

use support::start_server;

fn fnv1a(hash: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *hash = (*hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
}

fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("read clients/js/src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            walk(&path, base, out);
        } else {
            let rel = path.strip_prefix(base).expect("under clients/js");
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// The same stamp as `clients/js/scripts/build.mjs` writes to `dist/SOURCES`.
#[test]
fn embedded_bundle_is_built_from_the_sources() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../clients/js");
    let mut inputs = Vec::new();
    walk(&root.join("src"), &root, &mut inputs);
    inputs.extend(
        [
            "package-lock.json",
            "scripts/build.mjs",
            "tsconfig.build.json",
            "tsconfig.json",
        ]
        .map(String::from),
    );
    inputs.sort();
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for file in &inputs {
        fnv1a(&mut hash, file.as_bytes());
        fnv1a(&mut hash, &[0]);
        fnv1a(&mut hash, &std::fs::read(root.join(file)).expect("read a build input"));
        fnv1a(&mut hash, &[0]);
    }
    let expected = format!("fnv1a64 {hash:016x}\n{}\n", inputs.join("\n"));
    let stamp = std::fs::read_to_string(root.join("dist/SOURCES")).unwrap_or_default();
    assert!(
        stamp == expected,
        "clients/js/dist is stale against clients/js/src: run `npm ci && npm run build` in clients/js and commit \
         dist/ (the server embeds dist/comet.js and dist/comet.mjs)"
    );
}

#[tokio::test]
async fn bundle_is_served_with_etag_and_revalidates() {
    let server = start_server().await;
    let http = reqwest::Client::new();
    for (path, needle) in [("/comet.js", "var Comet="), ("/comet.mjs", "export{")] {
        let res = http.get(server.url(path)).send().await.expect("GET bundle");
        assert_eq!(res.status(), 200, "{path}");
        let headers = res.headers().clone();
        assert_eq!(headers["content-type"], "text/javascript; charset=utf-8", "{path}");
        let etag = headers["etag"].to_str().expect("ascii etag").to_owned();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "strong etag: {etag}");
        let body = res.text().await.expect("body");
        assert!(body.contains(needle), "{path} should contain {needle:?}");
        assert!(body.contains("comet.v1"), "{path} is the client bundle");

        let again = http.get(server.url(path)).send().await.expect("GET again");
        assert_eq!(again.headers()["etag"].to_str().unwrap(), etag, "the tag is stable");

        for inm in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"nope\", {etag}"),
            "*".to_owned(),
        ] {
            let res = http
                .get(server.url(path))
                .header("if-none-match", &inm)
                .send()
                .await
                .expect("conditional GET");
            assert_eq!(res.status(), 304, "{path} with If-None-Match {inm}");
            assert_eq!(res.headers()["etag"].to_str().unwrap(), etag);
            assert!(res.bytes().await.unwrap().is_empty(), "304 has no body");
        }
        let res = http
            .get(server.url(path))
            .header("if-none-match", "\"0000000000000000-0\"")
            .send()
            .await
            .expect("conditional GET, other tag");
        assert_eq!(res.status(), 200, "{path}: another tag gets the body");
    }
    let (js, mjs) = (
        http.get(server.url("/comet.js")).send().await.unwrap(),
        http.get(server.url("/comet.mjs")).send().await.unwrap(),
    );
    assert_ne!(js.headers()["etag"], mjs.headers()["etag"], "two bundles, two tags");
}

#[tokio::test]
async fn demo_page_loads_the_client() {
    let server = start_server().await;
    let page = reqwest::get(server.url("/")).await.unwrap().text().await.unwrap();
    assert!(page.contains("/comet.js"), "the demo page includes the client");
    let res = reqwest::get(server.url("/demo/client-demo.js")).await.unwrap();
    assert_eq!(res.status(), 200);
}
