// Prints a container SAS token (read, add, create, write, delete, list; one
// hour) for a loopback Azurite's well-known emulator account.
// Usage: node azurite-sas.js CONTAINER
const path = require("path");
const { generateBlobSASQueryParameters, ContainerSASPermissions, StorageSharedKeyCredential } = require(
  path.join(__dirname, "../../.tools/azurite/node_modules/@azure/storage-blob"));
const [container] = process.argv.slice(2);
const account = "devstoreaccount1";
const key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
const sas = generateBlobSASQueryParameters({
  containerName: container,
  permissions: ContainerSASPermissions.parse("racwdl"),
  startsOn: new Date(Date.now() - 60 * 1000),
  expiresOn: new Date(Date.now() + 3600 * 1000),
}, new StorageSharedKeyCredential(account, key));
process.stdout.write(sas.toString());
