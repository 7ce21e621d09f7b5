"""GitHub integration: command grammar, webhook signatures, REST client, repository doctrine."""
