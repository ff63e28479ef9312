from faceproof.cli import app

app()
