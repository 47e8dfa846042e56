"""The client side: JobCluster over an asyncio engine running on its own thread."""
