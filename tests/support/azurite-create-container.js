// Creates a container in a loopback Azurite with the well-known emulator account,
// through Azure's own SDK (object_store cannot create containers).
// Usage: node azurite-create-container.js http://127.0.0.1:PORT CONTAINER
const path = require("path");
const { BlobServiceClient, StorageSharedKeyCredential } = require(
  path.join(__dirname, "../../.tools/azurite/node_modules/@azure/storage-blob"));
const [endpoint, container] = process.argv.slice(2);
const account = "devstoreaccount1";
const key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const svc = new BlobServiceClient(`${endpoint}/${account}`, new StorageSharedKeyCredential(account, key));
svc.getContainerClient(container).createIfNotExists()
  .then(() => process.exit(0))
  .catch((e) => { console.error(`cannot create container ${container}: ${e.message}`); process.exit(1); });
