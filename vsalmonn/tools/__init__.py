"""LangChain tools over the reader and the catalog (DESIGN §6); built in a later issue."""
