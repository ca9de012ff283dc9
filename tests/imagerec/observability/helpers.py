"""Reading the site's own endpoints as a monitoring system would."""


def readyz(client) -> tuple[int, dict]:
    response = client.get("/readyz")
    return response.status_code, response.json()
