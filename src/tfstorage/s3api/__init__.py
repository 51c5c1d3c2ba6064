"""The S3 protocol front door: SigV4, aws-chunked bodies, checksums, XML in and out.

These modules are pure: they see bytes, headers and a secret-lookup callable, never
the index or the blob store, so the routes that wire them stay a few lines each.
"""
