def test_smoke(make_ca, tmp_path):
    import datetime as dt
    import subprocess
    from hsm.client_keys import generate_client_key
    for kt, sz in [("ec", 256), ("rsa", 2048), ("ec", 384)]:
        ca = make_ca(kt, sz)
        cert = ca.issue("thing-1", generate_client_key("ec", 256), dt.timedelta(hours=1))
        (tmp_path / "c.pem").write_text(cert.certificate_pem)
        (tmp_path / "ca.pem").write_text(ca.ca_pem)
        out = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem"), "-purpose", "sslclient", str(tmp_path / "c.pem")], capture_output=True, text=True)
        print(out.stdout, out.stderr)
        assert out.returncode == 0
