// Scenarios of the AWS SDK for JavaScript v3 (its defaults: flexible checksums when supported,
// response checksums validated) against a Tessera gateway. Run by
// tests/integration/test_clients_js.py: `node s3.cjs SCENARIO BUCKET` with the cluster's
// AWS_* environment; exits 0 when every check held, else prints what differed and exits 1.
"use strict";

const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const { Readable } = require("node:stream");
const s3lib = require("@aws-sdk/client-s3");
const { Upload } = require("@aws-sdk/lib-storage");
const { getSignedUrl } = require("@aws-sdk/s3-request-presigner");

const MIB = 1024 * 1024;
const ALGORITHMS = ["CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME"];

const client = new s3lib.S3Client({
  endpoint: process.env.AWS_ENDPOINT_URL,
  region: process.env.AWS_DEFAULT_REGION,
  forcePathStyle: true,
  maxAttempts: 1,
  credentials: {
    accessKeyId: process.env.AWS_ACCESS_KEY_ID,
    secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY,
  },
});

/** Sends command `name` (e.g. "PutObject") with `input`. */
function send(name, input) {
  return client.send(new s3lib[`${name}Command`](input));
}

/** The bytes of a GetObject response body. */
async function bodyOf(out) {
  return Buffer.from(await out.Body.transformToByteArray());
}

/** Bytes from a seeded generator, the same on every run. */
function bytes(n, seed) {
  const out = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** The service error `name` and HTTP status a call must fail with. */
async function rejects(promise, name, status) {
  try {
    await promise;
  } catch (err) {
    assert.equal(err.name, name, `${err.name}: ${err.message}`);
    assert.equal(err.$metadata.httpStatusCode, status);
    return err;
  }
  assert.fail(`expected ${name} (${status})`);
}

const md5 = (b) => crypto.createHash("md5").update(b).digest("hex");

const scenarios = {
  /** PutObject with the default checksum and each algorithm, from a buffer and from a stream
   * (aws-chunked with a trailing checksum); GetObject validates the stored checksum. */
  async checksums(b) {
    const data = bytes(300 * 1024 + 7, 1);
    const put = await send("PutObject", { Bucket: b, Key: "default", Body: data });
    assert.equal(put.ETag, `"${md5(data)}"`);
    assert.ok(put.ChecksumCRC32, "the default checksum (CRC32) is echoed");
    assert.equal(put.ChecksumType, "FULL_OBJECT");
    for (const alg of ALGORITHMS) {
      for (const stream of [false, true]) {
        const key = `${alg}-${stream ? "stream" : "buffer"}`;
        const body = stream ? Readable.from([data.subarray(0, 70000), data.subarray(70000)]) : data;
        const p = await send("PutObject", {
          Bucket: b, Key: key, Body: body, ChecksumAlgorithm: alg, ContentLength: data.length,
        });
        const field = `Checksum${alg}`;
        assert.ok(p[field], `${key}: ${field} echoed`);
        const got = await send("GetObject", { Bucket: b, Key: key, ChecksumMode: "ENABLED" });
        assert.equal(got[field], p[field], key);
        assert.equal(got.ChecksumType, "FULL_OBJECT", key);
        assert.ok((await bodyOf(got)).equals(data), key);
        const head = await send("HeadObject", { Bucket: b, Key: key, ChecksumMode: "ENABLED" });
        assert.equal(head[field], p[field], key);
        assert.equal(head.ContentLength, data.length);
        // A range answers without the whole-object checksum (the client cannot check it).
        const part = await send("GetObject", {
          Bucket: b, Key: key, Range: "bytes=5-9", ChecksumMode: "ENABLED",
        });
        assert.ok((await bodyOf(part)).equals(data.subarray(5, 10)), key);
      }
    }
    // A checksum the body does not match: 400 BadDigest, nothing stored.
    await rejects(send("PutObject", {
      Bucket: b, Key: "bad", Body: data, ChecksumSHA256: crypto.createHash("sha256")
        .update("other").digest("base64"),
    }), "BadDigest", 400);
    await rejects(send("HeadObject", { Bucket: b, Key: "bad" }), "NotFound", 404);
    // An empty object.
    await send("PutObject", { Bucket: b, Key: "empty", Body: Buffer.alloc(0) });
    const empty = await send("GetObject", { Bucket: b, Key: "empty", ChecksumMode: "ENABLED" });
    assert.equal((await bodyOf(empty)).length, 0);
  },

  /** lib-storage Upload: parallel parts with the default and a chosen checksum; a small body
   * in one PutObject; an aborted upload leaves no upload behind. */
  async upload(b) {
    const data = bytes(12 * MIB + 5, 2);
    // The whole-object value of each algorithm, as a single PutObject reports it.
    const whole = {};
    for (const alg of ALGORITHMS) {
      whole[alg] = (await send("PutObject", { Bucket: b, Key: "whole", Body: data,
        ChecksumAlgorithm: alg }))[`Checksum${alg}`];
    }
    // lib-storage asks for the default CRC32 (a COMPOSITE checksum of the parts' CRC32s) or
    // the algorithm named; CRC64NVME uploads are FULL_OBJECT (S3 takes no other type for it).
    for (const [key, alg, type] of [["default", undefined, "COMPOSITE"],
      ["crc64", "CRC64NVME", "FULL_OBJECT"], ["sha256", "SHA256", "COMPOSITE"],
      ["crc32c", "CRC32C", "COMPOSITE"]]) {
      const field = `Checksum${alg ?? "CRC32"}`;
      const up = new Upload({
        client, queueSize: 3, partSize: 5 * MIB, leavePartsOnError: false,
        params: { Bucket: b, Key: key, Body: Readable.from(chunks(data, 256 * 1024)),
          ...(alg ? { ChecksumAlgorithm: alg } : {}) },
      });
      const done = await up.done();
      assert.match(done.ETag, /-3"$/, key);
      const got = await send("GetObject", { Bucket: b, Key: key, ChecksumMode: "ENABLED" });
      assert.ok((await bodyOf(got)).equals(data), key);
      const head = await send("HeadObject", { Bucket: b, Key: key, ChecksumMode: "ENABLED" });
      assert.equal(head.ContentLength, data.length, key);
      assert.equal(head.ETag, done.ETag, key);
      assert.equal(done.ChecksumType, type, key);
      assert.equal(head.ChecksumType, type, key);
      assert.equal(head[field], done[field], key);
      if (type === "FULL_OBJECT") assert.equal(done[field], whole[alg], key);
      else assert.match(done[field], /-3$/, key);
      const part = await send("GetObject", { Bucket: b, Key: key, PartNumber: 3 });
      assert.ok((await bodyOf(part)).equals(data.subarray(10 * MIB)), key);
    }
    const small = new Upload({ client, params: { Bucket: b, Key: "small", Body: data.subarray(0, 1000) } });
    await small.done();
    assert.ok((await bodyOf(await send("GetObject", { Bucket: b, Key: "small" })))
      .equals(data.subarray(0, 1000)));

    let started = 0;
    const aborting = new Upload({
      client, queueSize: 1, partSize: 5 * MIB, leavePartsOnError: false,
      params: { Bucket: b, Key: "aborted", Body: Readable.from(chunks(data, MIB)) },
    });
    aborting.on("httpUploadProgress", () => {
      started += 1;
      if (started === 1) aborting.abort();
    });
    await assert.rejects(aborting.done(), (err) => err.name === "AbortError");
    // done() rejects at once; lib-storage sends AbortMultipartUpload when the part in flight
    // has failed: wait for that, then no upload is left.
    await waitFor(async () => ((await send("ListMultipartUploads", { Bucket: b })).Uploads ?? [])
      .length === 0, "the aborted upload to go");
    await rejects(send("HeadObject", { Bucket: b, Key: "aborted" }), "NotFound", 404);
  },

  /** A FULL_OBJECT CRC32 and CRC32C multipart upload (parts sent in parallel, out of order):
   * Complete checks the whole-object value given against the parts combined. */
  async fullobject(b) {
    const data = bytes(11 * MIB, 10);
    const sizes = [5 * MIB, 5 * MIB, MIB];
    for (const alg of ["CRC32", "CRC32C", "CRC64NVME"]) {
      const field = `Checksum${alg}`;
      const want = (await send("PutObject", { Bucket: b, Key: "whole", Body: data,
        ChecksumAlgorithm: alg }))[field];
      const key = `full-${alg}`;
      const mp = await send("CreateMultipartUpload", { Bucket: b, Key: key,
        ChecksumAlgorithm: alg, ChecksumType: "FULL_OBJECT" });
      assert.equal(mp.ChecksumType, "FULL_OBJECT");
      assert.equal(mp.ChecksumAlgorithm, alg);
      const starts = [0, 5 * MIB, 10 * MIB];
      const parts = await Promise.all([2, 1, 0].map((i) => send("UploadPart", {
        Bucket: b, Key: key, UploadId: mp.UploadId, PartNumber: i + 1, ChecksumAlgorithm: alg,
        Body: data.subarray(starts[i], starts[i] + sizes[i]),
      }).then((r) => ({ PartNumber: i + 1, ETag: r.ETag, [field]: r[field] }))));
      parts.reverse();
      // A wrong whole-object value: 400 BadDigest, the upload stays open.
      await rejects(send("CompleteMultipartUpload", { Bucket: b, Key: key, UploadId: mp.UploadId,
        ChecksumType: "FULL_OBJECT", [field]: whole0(alg),
        MultipartUpload: { Parts: parts } }), "BadDigest", 400);
      const done = await send("CompleteMultipartUpload", { Bucket: b, Key: key,
        UploadId: mp.UploadId, ChecksumType: "FULL_OBJECT", [field]: want,
        MultipartUpload: { Parts: parts } });
      assert.equal(done[field], want);
      assert.equal(done.ChecksumType, "FULL_OBJECT");
      const got = await send("GetObject", { Bucket: b, Key: key, ChecksumMode: "ENABLED" });
      assert.equal(got[field], want);
      assert.equal(got.ChecksumType, "FULL_OBJECT");
      assert.ok((await bodyOf(got)).equals(data));
    }
  },

  /** CopyObject with a new checksum algorithm and replaced metadata; UploadPartCopy. */
  async copy(b) {
    const data = bytes(6 * MIB + 3, 3);
    await send("PutObject", { Bucket: b, Key: "src", Body: data, Metadata: { a: "1" } });
    const c = await send("CopyObject", {
      Bucket: b, Key: "dst", CopySource: `${b}/src`, ChecksumAlgorithm: "SHA256",
      MetadataDirective: "REPLACE", Metadata: { b: "2" },
    });
    assert.equal(c.CopyObjectResult.ChecksumSHA256,
      crypto.createHash("sha256").update(data).digest("base64"));
    const got = await send("GetObject", { Bucket: b, Key: "dst", ChecksumMode: "ENABLED" });
    assert.deepEqual(got.Metadata, { b: "2" });
    assert.ok((await bodyOf(got)).equals(data));
    const mp = await send("CreateMultipartUpload", { Bucket: b, Key: "pc", ChecksumAlgorithm: "CRC32" });
    const parts = [];
    for (const [n, range] of [[1, `bytes=0-${5 * MIB - 1}`], [2, `bytes=${5 * MIB}-${data.length - 1}`]]) {
      const r = await send("UploadPartCopy", {
        Bucket: b, Key: "pc", UploadId: mp.UploadId, PartNumber: n, CopySource: `${b}/src`,
        CopySourceRange: range,
      });
      parts.push({ PartNumber: n, ETag: r.CopyPartResult.ETag,
        ChecksumCRC32: r.CopyPartResult.ChecksumCRC32 });
    }
    await send("CompleteMultipartUpload", {
      Bucket: b, Key: "pc", UploadId: mp.UploadId, MultipartUpload: { Parts: parts },
    });
    const pc = await send("GetObject", { Bucket: b, Key: "pc", ChecksumMode: "ENABLED" });
    assert.ok((await bodyOf(pc)).equals(data));
  },

  /** ListObjectsV2 paged with the paginator (MaxKeys 2), with a delimiter; DeleteObjects. */
  async listing(b) {
    const keys = [];
    for (let i = 0; i < 7; i++) keys.push(`k/${i}`);
    keys.push("k/sub/x", "k/sub/y", "top");
    await Promise.all(keys.map((k) => send("PutObject", { Bucket: b, Key: k, Body: k })));
    const seen = [];
    let pages = 0;
    for await (const page of s3lib.paginateListObjectsV2({ client, pageSize: 2 },
      { Bucket: b, Prefix: "k/" })) {
      pages += 1;
      seen.push(...(page.Contents ?? []).map((o) => o.Key));
    }
    assert.deepEqual(seen, keys.slice(0, 9).sort());
    assert.equal(pages, 5);
    const level = await send("ListObjectsV2", { Bucket: b, Prefix: "k/", Delimiter: "/" });
    assert.deepEqual(level.CommonPrefixes.map((p) => p.Prefix), ["k/sub/"]);
    assert.equal(level.KeyCount, 8);
    const del = await send("DeleteObjects", {
      Bucket: b, Delete: { Objects: [...keys, "never-was"].map((Key) => ({ Key })) },
    });
    assert.equal(del.Deleted.length, keys.length + 1);
    assert.equal(del.Errors, undefined);
    const quiet = await send("DeleteObjects", {
      Bucket: b, Delete: { Quiet: true, Objects: [{ Key: "top" }] },
    });
    assert.equal(quiet.Deleted, undefined);
    assert.equal((await send("ListObjectsV2", { Bucket: b })).KeyCount, 0);
  },

  /** Presigned GET and PUT URLs fetched without the SDK. */
  async presign(b) {
    const data = bytes(4000, 4);
    const putUrl = await getSignedUrl(client, new s3lib.PutObjectCommand({
      Bucket: b, Key: "p", ContentType: "application/x-test" }), { expiresIn: 300 });
    const put = await fetch(putUrl, { method: "PUT", body: data,
      headers: { "content-type": "application/x-test" } });
    assert.equal(put.status, 200, await put.text());
    // No checksum was sent: S3 stores (and answers) a CRC64NVME of its own, which the SDK
    // then checks on GetObject.
    const crc = put.headers.get("x-amz-checksum-crc64nvme");
    assert.ok(crc, "x-amz-checksum-crc64nvme on a PUT without a checksum");
    assert.equal(put.headers.get("x-amz-checksum-type"), "FULL_OBJECT");
    const viaSdk = await send("GetObject", { Bucket: b, Key: "p" });
    assert.equal(viaSdk.ChecksumCRC64NVME, crc);
    assert.ok((await bodyOf(viaSdk)).equals(data));
    const getUrl = await getSignedUrl(client, new s3lib.GetObjectCommand({ Bucket: b, Key: "p" }),
      { expiresIn: 300 });
    const got = await fetch(getUrl);
    assert.equal(got.status, 200);
    assert.equal(got.headers.get("content-type"), "application/x-test");
    assert.ok(Buffer.from(await got.arrayBuffer()).equals(data));
    const forged = new URL(getUrl);
    const sig = forged.searchParams.get("X-Amz-Signature");
    forged.searchParams.set("X-Amz-Signature", sig.slice(0, -1) + (sig.endsWith("0") ? "1" : "0"));
    const bad = await fetch(forged);
    assert.equal(bad.status, 403);
    assert.match(await bad.text(), /<Code>SignatureDoesNotMatch<\/Code>/);
  },

  /** SSE-C: put, get and head with the key; without it 400; multipart with it. */
  async ssec(b) {
    const key = bytes(32, 5);
    const sse = { SSECustomerAlgorithm: "AES256", SSECustomerKey: key };
    const data = bytes(100000, 6);
    const p = await send("PutObject", { Bucket: b, Key: "c", Body: data, ...sse });
    assert.equal(p.SSECustomerAlgorithm, "AES256");
    assert.equal(p.SSECustomerKeyMD5, crypto.createHash("md5").update(key).digest("base64"));
    const got = await send("GetObject", { Bucket: b, Key: "c", ChecksumMode: "ENABLED", ...sse });
    assert.ok((await bodyOf(got)).equals(data));
    await rejects(send("GetObject", { Bucket: b, Key: "c" }), "InvalidRequest", 400);
    const head = await send("HeadObject", { Bucket: b, Key: "c", ...sse });
    assert.equal(head.ContentLength, data.length);
    const big = bytes(11 * MIB, 7);
    await new Upload({ client, partSize: 5 * MIB, queueSize: 2,
      params: { Bucket: b, Key: "m", Body: big, ...sse } }).done();
    const m = await send("GetObject", { Bucket: b, Key: "m", ...sse });
    assert.ok((await bodyOf(m)).equals(big));
  },

  /** Conditional writes: If-None-Match "*" and If-Match on PutObject and Complete. */
  async conditional(b) {
    const first = await send("PutObject", { Bucket: b, Key: "c", Body: "one", IfNoneMatch: "*" });
    await rejects(send("PutObject", { Bucket: b, Key: "c", Body: "two", IfNoneMatch: "*" }),
      "PreconditionFailed", 412);
    await rejects(send("PutObject", { Bucket: b, Key: "c", Body: "two", IfMatch: '"0000"' }),
      "PreconditionFailed", 412);
    const second = await send("PutObject", { Bucket: b, Key: "c", Body: "two", IfMatch: first.ETag });
    assert.notEqual(second.ETag, first.ETag);
    await rejects(send("PutObject", { Bucket: b, Key: "none", Body: "x", IfMatch: first.ETag }),
      "NoSuchKey", 404);
    const mp = await send("CreateMultipartUpload", { Bucket: b, Key: "c" });
    const part = await send("UploadPart", { Bucket: b, Key: "c", UploadId: mp.UploadId,
      PartNumber: 1, Body: "three" });
    await rejects(send("CompleteMultipartUpload", { Bucket: b, Key: "c", UploadId: mp.UploadId,
      IfNoneMatch: "*", MultipartUpload: { Parts: [{ PartNumber: 1, ETag: part.ETag }] } }),
    "PreconditionFailed", 412);
    const got = await send("GetObject", { Bucket: b, Key: "c", IfMatch: second.ETag });
    assert.equal((await bodyOf(got)).toString(), "two");
    // 304 has no body: the SDK names the error from nothing ("Unknown"), as against AWS.
    await rejects(send("GetObject", { Bucket: b, Key: "c", IfNoneMatch: second.ETag }),
      "Unknown", 304);
  },

  /** GetObjectAttributes of a single-part and a multipart object. */
  async attributes(b) {
    const data = bytes(5000, 8);
    const p = await send("PutObject", { Bucket: b, Key: "s", Body: data, ChecksumAlgorithm: "SHA1" });
    const a = await send("GetObjectAttributes", { Bucket: b, Key: "s",
      ObjectAttributes: ["ETag", "Checksum", "ObjectSize", "StorageClass", "ObjectParts"] });
    assert.equal(a.ETag, p.ETag.replaceAll('"', ""));
    assert.equal(a.ObjectSize, data.length);
    assert.equal(a.Checksum.ChecksumSHA1, p.ChecksumSHA1);
    assert.equal(a.Checksum.ChecksumType, "FULL_OBJECT");
    assert.equal(a.StorageClass, "STANDARD");
    const big = bytes(11 * MIB, 9);
    await new Upload({ client, partSize: 5 * MIB, queueSize: 3,
      params: { Bucket: b, Key: "m", Body: big, ChecksumAlgorithm: "SHA256" } }).done();
    const m = await send("GetObjectAttributes", { Bucket: b, Key: "m", MaxParts: 2,
      ObjectAttributes: ["ObjectParts", "Checksum", "ObjectSize"] });
    assert.equal(m.ObjectSize, big.length);
    assert.equal(m.ObjectParts.TotalPartsCount, 3);
    assert.equal(m.ObjectParts.IsTruncated, true);
    assert.deepEqual(m.ObjectParts.Parts.map((x) => x.Size), [5 * MIB, 5 * MIB]);
    assert.equal(m.ObjectParts.Parts[0].ChecksumSHA256,
      crypto.createHash("sha256").update(big.subarray(0, 5 * MIB)).digest("base64"));
    assert.equal(m.Checksum.ChecksumType, "COMPOSITE");
    assert.match(m.Checksum.ChecksumSHA256, /-3$/);
  },

  /** Object tagging: with PutObject, put/get/delete tagging. */
  async tagging(b) {
    await send("PutObject", { Bucket: b, Key: "t", Body: "x", Tagging: "a=1&b=two%20words" });
    const t = await send("GetObjectTagging", { Bucket: b, Key: "t" });
    assert.deepEqual(t.TagSet, [{ Key: "a", Value: "1" }, { Key: "b", Value: "two words" }]);
    assert.equal((await send("HeadObject", { Bucket: b, Key: "t" })).TagCount, 2);
    const got = await send("GetObject", { Bucket: b, Key: "t" });
    assert.equal(got.TagCount, 2);
    assert.equal((await bodyOf(got)).toString(), "x");
    await send("PutObjectTagging", { Bucket: b, Key: "t",
      Tagging: { TagSet: [{ Key: "c", Value: "3" }] } });
    assert.deepEqual((await send("GetObjectTagging", { Bucket: b, Key: "t" })).TagSet,
      [{ Key: "c", Value: "3" }]);
    await send("DeleteObjectTagging", { Bucket: b, Key: "t" });
    assert.deepEqual((await send("GetObjectTagging", { Bucket: b, Key: "t" })).TagSet, []);
  },

  /** Versioning: versions listed newest first, read by id, a delete marker, its removal. */
  async versioning(b) {
    await send("PutBucketVersioning", { Bucket: b,
      VersioningConfiguration: { Status: "Enabled" } });
    const v = [];
    for (const body of ["one", "two"]) {
      v.push((await send("PutObject", { Bucket: b, Key: "v", Body: body })).VersionId);
    }
    assert.ok(v[0] && v[1] && v[0] !== v[1]);
    const old = await send("GetObject", { Bucket: b, Key: "v", VersionId: v[0] });
    assert.equal((await bodyOf(old)).toString(), "one");
    const del = await send("DeleteObject", { Bucket: b, Key: "v" });
    assert.equal(del.DeleteMarker, true);
    await rejects(send("GetObject", { Bucket: b, Key: "v" }), "NoSuchKey", 404);
    const lv = await send("ListObjectVersions", { Bucket: b });
    assert.deepEqual(lv.Versions.map((x) => x.VersionId), [v[1], v[0]]);
    assert.equal(lv.DeleteMarkers[0].VersionId, del.VersionId);
    assert.equal(lv.DeleteMarkers[0].IsLatest, true);
    await send("DeleteObject", { Bucket: b, Key: "v", VersionId: del.VersionId });
    assert.equal((await bodyOf(await send("GetObject", { Bucket: b, Key: "v" }))).toString(), "two");
  },
};

/** A well-formed checksum of `alg` that matches no data here (all zero bytes). */
function whole0(alg) {
  return Buffer.alloc(alg === "CRC64NVME" ? 8 : 4).toString("base64");
}

/** Resolves when `cond()` holds, polling; fails after 60 s. */
async function waitFor(cond, what) {
  const deadline = Date.now() + 60000;
  while (!(await cond())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** `data` in pieces of `size` bytes, as an iterable for Readable.from. */
function* chunks(data, size) {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

async function main() {
  const [name, bucket] = process.argv.slice(2);
  if (!scenarios[name]) throw new Error(`no scenario ${name}; have ${Object.keys(scenarios)}`);
  await send("CreateBucket", { Bucket: bucket });
  await scenarios[name](bucket);
}

// Exits when done: a response body left unread would hold its socket (and node) open.
main().then(() => {
  process.stdout.write("ok\n");
  process.exit(0);
}, (err) => {
  const meta = err.$metadata ? ` ${JSON.stringify(err.$metadata)}` : "";
  const resp = err.$response ? ` ${err.$response.statusCode}` : "";
  process.stderr.write(`${err.stack ?? err}${meta}${resp}\n`);
  process.exit(1);
});
