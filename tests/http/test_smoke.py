async def test_issue_view_revoke(client, bearer, identity):
    thing = identity.thing_a1.id
    response = await client.post("/certs", json={"thing_id": thing, "key_type": "ec"},
                                 headers=bearer("alice"))
    assert response.status_code == 201, response.text
    body = response.json()
    view = await client.get(f"/certs/{body['serial']}", headers=bearer("alice"))
    assert view.status_code == 200, view.text
    revoke = await client.delete(f"/certs/{body['serial']}", headers=bearer("alice"))
    assert revoke.status_code == 200, revoke.text
    crl = await client.get("/crl")
    assert crl.status_code == 200
