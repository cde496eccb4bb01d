from __future__ import annotations

import hashlib


def test_upload_download_roundtrip(api):
    data = b"\x00\x01safetensors-bytes" * 100
    resp = api.post(
        "/v1/artifacts?name=w.safetensors",
        content=data,
        headers={"content-type": "application/octet-stream"},
    )
    assert resp.status_code == 201
    meta = resp.json()
    assert meta["id"] == hashlib.sha256(data).hexdigest() and meta["size"] == len(data)
    assert api.get(f"/v1/artifacts/{meta['id']}/content").content == data
    assert api.get("/v1/artifacts").json()["artifacts"][0]["name"] == "w.safetensors"


def test_bad_ids_and_empty_body(api):
    assert api.get("/v1/artifacts/..%2F..%2Fetc%2Fpasswd").status_code in (404, 422)
    assert api.get("/v1/artifacts/" + "ab" * 32).status_code == 404
    assert api.get("/v1/artifacts/nothex").json()["error"]["code"] == "validation_error"
    assert api.post("/v1/artifacts", content=b"").status_code == 422


def test_the_server_does_not_keep_curls_form_encoding(api) -> None:
    # curl --data-binary sends application/x-www-form-urlencoded unless told otherwise.
    meta = api.post(
        "/v1/artifacts?name=graph.json",
        content=b"{}",
        headers={"content-type": "application/x-www-form-urlencoded"},
    ).json()
    assert meta["media_type"] == "application/json"
